"""Runs side by side, read back from TensorBoard: ``<out>.csv`` (each run's grok step, last step, and final
val/acc, train/acc and parameter norm) and ``<out>.png`` (val/acc against step, one line per run), for
runs that are not one sweep (an intervention against its baseline, say).

    python -m lit_grok.reports.compare docs/results/workbench_interventions logs/cpu-grokfast/seed0 logs/cpu-grok-seeds/seed1
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from lit_grok.reports import new_figure, refuse
from lit_grok.reports.curves import read_curves

TAGS = ("val/acc", "train/acc", "norm/params", "events/grokked_step")


def summary(run_dir: Path) -> dict:
    """A run's grok step (-1: never), last validated step and final metrics."""
    curves = read_curves(Path(run_dir), TAGS)
    steps = sorted(curves.get("val/acc", {}))
    last = steps[-1] if steps else None
    grokked = [v for v in curves.get("events/grokked_step", {}).values() if v >= 0]
    return {"run": str(run_dir), "grokked_step": int(max(grokked)) if grokked else -1, "last_step": last,
            **{f"final {tag}": curves.get(tag, {}).get(last) for tag in ("val/acc", "train/acc", "norm/params")}}


def compare(out: Path, run_dirs: list[Path]) -> list[dict]:
    """Writes ``<out>.csv`` and ``<out>.png``; returns the rows."""
    rows = [summary(d) for d in run_dirs]
    with open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = new_figure((8, 4.5))
    for run_dir in run_dirs:
        points = read_curves(Path(run_dir), ("val/acc",)).get("val/acc", {})
        ax.plot(sorted(points), [points[s] for s in sorted(points)], lw=1, label=Path(run_dir).parent.name + "/" +
                Path(run_dir).name)
    ax.set(xlabel="step", ylabel="val/acc", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=120)
    return rows


def main(argv: list[str]) -> None:
    usage = ("usage: python -m lit_grok.reports.compare OUT RUN_DIR [RUN_DIR ...] (writes OUT.csv and OUT.png; "
             "each RUN_DIR a run's folder, e.g. logs/cpu-grok/version_0)")
    if any(a in ("-h", "--help") for a in argv):
        print(usage)
        sys.exit(0)
    if len(argv) < 2:
        refuse(usage)
    missing = [d for d in argv[1:] if not Path(d).is_dir()]
    if missing:
        refuse(f"error: {missing[0]} is not a run folder. {usage}")
    for row in compare(Path(argv[0]), [Path(d) for d in argv[1:]]):
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
