"""The local learning coefficient over one run (``LocalLearningCoefficient``), read back from TensorBoard:
``llc.csv`` (every estimate beside the accuracies and the norm) and ``llc.png`` (the LLC with its spread over
chains, and held-out accuracy, against step), and where the LLC peaked against where the run grokked, so that
"the LLC falls at grokking" is read off a file.

    python -m lit_grok.reports.llc logs/cpu-llc/version_0
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lit_grok.reports import NotThisExperiment, main, new_figure
from lit_grok.reports.curves import read_curves

TAGS = ("llc/mean", "llc/std", "val/acc", "train/acc", "norm/params")


def report(run_dir: Path, threshold: float = 0.99) -> dict:
    """Writes llc.csv and llc.png in the run folder; returns the LLC's peak, its last value and the first
    step with val/acc >= ``threshold``."""
    run_dir = Path(run_dir)
    curves = read_curves(run_dir, TAGS)
    llc = curves.get("llc/mean", {})
    if not llc:
        raise NotThisExperiment(f"{run_dir} has no llc/mean: was LocalLearningCoefficient among its callbacks?")
    steps = sorted(llc)
    with open(run_dir / "llc.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *TAGS])
        for step in steps:
            writer.writerow([step, *(f"{curves.get(t, {}).get(step, math.nan):.5g}" for t in TAGS)])
    std = curves.get("llc/std", {})
    fig, ax = new_figure((7, 4))
    ax.errorbar(steps, [llc[s] for s in steps], yerr=[std.get(s, 0.0) for s in steps], marker="o", ms=3,
                capsize=2, label="LLC (mean ± std over chains)")
    ax.set(xlabel="step", ylabel="local learning coefficient")
    acc = curves.get("val/acc", {})
    twin = ax.twinx()
    twin.plot(sorted(acc), [acc[s] for s in sorted(acc)], color="tab:green", lw=1, label="val/acc")
    twin.set(ylabel="val/acc (green)", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(run_dir / "llc.png", dpi=120)
    grokked = next((s for s in sorted(acc) if acc[s] >= threshold), None)
    peak = max(steps, key=lambda s: llc[s])
    return {"estimates": len(steps), "peak": {"step": peak, "llc": llc[peak]},
            "last": {"step": steps[-1], "llc": llc[steps[-1]]}, f"grokked_step_{threshold:g}": grokked}


if __name__ == "__main__":
    main(report)
