"""Progress measures of one run (``ProgressMeasures``), read back from TensorBoard: ``progress.csv`` (every
validation) and ``progress.png`` (train, held-out, restricted and excluded loss, and the number of key
frequencies, against step), and the step at which each loss first falls below a threshold, so that "restricted
loss falls before validation loss" is read off a file.

    python -m lit_grok.reports.progress logs/cpu-progress-measures/seed0
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from lit_grok.reports import main, new_figure
from lit_grok.reports.curves import read_curves

LOSSES = ("train/loss", "val/loss", "progress/restricted_loss", "progress/excluded_loss")
TAGS = (*LOSSES, "val/acc", "fourier/n_key_freqs", "fourier/ipr", "progress/softmax_collapse")


def first_below(points: dict[int, float], threshold: float) -> Optional[int]:
    """The first step whose value is below the threshold (None if none is)."""
    return next((step for step in sorted(points) if points[step] < threshold), None)


def report(run_dir: Path, threshold: float = 0.1) -> dict:
    """Writes progress.csv and progress.png in the run folder; returns when each loss first fell below
    ``threshold`` and the key frequencies' count at the first and last validation."""
    run_dir = Path(run_dir)
    curves = read_curves(run_dir, TAGS)
    steps = sorted(curves.get("val/loss", {}))
    with open(run_dir / "progress.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *TAGS])
        for step in steps:
            writer.writerow([step, *(f"{curves.get(t, {}).get(step, math.nan):.5g}" for t in TAGS)])
    fig, ax = new_figure((8, 4.5))
    for tag in LOSSES:
        points = curves.get(tag, {})
        ax.plot([max(s, 1) for s in sorted(points)], [points[s] for s in sorted(points)], label=tag)
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="loss")
    keys = curves.get("fourier/n_key_freqs", {})
    if keys:
        twin = ax.twinx()
        twin.plot([max(s, 1) for s in sorted(keys)], [keys[s] for s in sorted(keys)], color="grey", ls=":",
                  label="key frequencies")
        twin.set_ylabel("key frequencies (dotted)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(run_dir / "progress.png", dpi=120)
    result = {f"first_below_{threshold:g}": {tag: first_below(curves.get(tag, {}), threshold) for tag in LOSSES}}
    if keys:
        result["n_key_freqs_first_last"] = [keys[min(keys)], keys[max(keys)]]
    return result


if __name__ == "__main__":
    main(report)
