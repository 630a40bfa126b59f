"""Every validation of every finished run of a sweep, read back from TensorBoard: ``curves.csv`` (run, step, val/acc,
train/acc, train/loss, norm/params) and ``curves.png`` (val/acc against step, one line per run), so that what a
results page says about the path to the end (still falling at the cap, say) follows from a file.

    python -m lit_grok.reports.curves logs/ungrok-sweep
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from lit_grok.reports import finished_runs, main, new_figure, save_figure
from lit_grok.sweep import RESULT

TAGS = ("val/acc", "train/acc", "train/loss", "norm/params")


def read_curves(run_dir: Path, tags: tuple[str, ...] = TAGS) -> dict[str, dict[int, float]]:
    """tag -> {optimiser steps taken: value} for one run (TensorBoard holds them at step - 1)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {tag: {e.step + 1: e.value for e in events.Scalars(tag)} for tag in tags if tag in present}


def report(sweep_dir: Path) -> dict:
    """Writes curves.csv and curves.png in the folder: a sweep's (one line per finished run), or one run's."""
    sweep_dir = Path(sweep_dir)
    if any(sweep_dir.glob("events.out.tfevents.*")):  # a run's own folder: its curves alone, written there
        return _one_run(sweep_dir)
    runs = finished_runs(sweep_dir, RESULT)
    fig, ax = new_figure((7, 4.5))
    with open(sweep_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", *TAGS])
        for run in runs:
            curves = read_curves(sweep_dir / run / "version_0")
            steps = sorted(curves.get("val/acc", {}))
            for step in steps:
                writer.writerow([run, step, *(f"{curves.get(t, {}).get(step, math.nan):.5g}" for t in TAGS)])
            if steps:
                ax.plot(steps, [curves["val/acc"][s] for s in steps], lw=1, label=run)
    ax.set(xlabel="step", ylabel="val/acc", ylim=(-0.02, 1.02))
    if len(runs) <= 24:
        ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    save_figure(fig, sweep_dir, "curves.png", "sweep/val_acc_curves")
    return {"runs": len(runs), "csv": str(sweep_dir / "curves.csv")}


def _one_run(run_dir: Path) -> dict:
    curves = read_curves(run_dir)
    steps = sorted(curves.get("val/acc", curves.get("train/acc", {})))
    with open(run_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", *TAGS])
        for step in steps:
            writer.writerow([run_dir.name, step, *(f"{curves.get(t, {}).get(step, math.nan):.5g}" for t in TAGS)])
    return {"runs": 1, "csv": str(run_dir / "curves.csv"), "validations": len(steps)}


if __name__ == "__main__":
    main(report)
