"""Slingshots found after the fact: ``SlingshotDetector`` run over the validation curves of every run under a
folder (a sweep's runs, its pre-trainings, unfinished runs included), for runs trained without the callback.

    python -m lit_grok.reports.slingshots logs/cpu-ungrok-tasks     # -> slingshots.csv there
"""

from __future__ import annotations

import csv
from pathlib import Path

from lit_grok.callbacks.slingshot import SlingshotDetector
from lit_grok.reports import NotThisExperiment
from lit_grok.reports.curves import read_curves

NORM = "norm/unembed"


def detect(run_dir: Path, norm: str = NORM) -> dict:
    """One run's slingshots from its TensorBoard curves: count, steps, last validated step."""
    curves = read_curves(run_dir, ("train/loss", norm))
    loss, norms = curves.get("train/loss", {}), curves.get(norm, {})
    detector = SlingshotDetector(norm=norm)
    steps = sorted(set(loss) & set(norms))
    for step in steps:
        detector.observe(step, loss[step], norms[step])
    return {"slingshots": len(detector.slingshots), "steps": " ".join(str(s[0]) for s in detector.slingshots),
            "largest_orders": max((round(s[1], 2) for s in detector.slingshots), default=""),
            "last_step": steps[-1] if steps else ""}


def report(folder: Path) -> dict:
    """Writes slingshots.csv in the folder: one row per run folder (``*/version_0`` at any depth)."""
    folder = Path(folder)
    runs = sorted({p.parent for p in folder.rglob("version_0/events.out.tfevents.*")})
    if not runs:
        raise NotThisExperiment(f"{folder} holds no run folders with TensorBoard events.")
    rows = [{"run": str(run.parent.relative_to(folder)), **detect(run)} for run in runs]
    with (folder / "slingshots.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"runs": len(rows), "with_slingshots": sum(r["slingshots"] > 0 for r in rows),
            "csv": str(folder / "slingshots.csv")}


if __name__ == "__main__":
    from lit_grok.reports import main

    main(report)
