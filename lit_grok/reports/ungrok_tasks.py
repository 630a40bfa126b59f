"""Ungrokking on several tasks (paper Fig. 8): final validation accuracy against D', one panel per task, one
line per weight decay, and the D' at which each line crosses 0.5.

    python -m lit_grok.reports.ungrok_tasks logs/cpu-ungrok-tasks
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

from lit_grok.reports import save_figure
from lit_grok.reports.d_crit import OPERATION, crossing, task_of
from lit_grok.reports.ungrok import load

TAG = "ungrok_tasks/final_val_acc"


def lines(rows: list[dict]) -> dict[str, dict[float, dict[int, list[dict]]]]:
    """task -> weight decay -> D' -> the runs (one per seed)."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        out[task_of(row)][row["wd"]][row["D'"]].append(row)
    return out


def report(sweep_dir: Path) -> dict:
    """Writes ungrok_tasks.png (a panel per task), ungrok_tasks.csv (a row per task, weight decay and D') and
    ungrok_tasks.json (the D' where each line's mean final val/acc crosses 0.5) in the sweep folder."""
    from matplotlib.figure import Figure

    sweep_dir = Path(sweep_dir)
    rows = load(sweep_dir)
    if not rows or OPERATION not in rows[0]:
        raise KeyError(OPERATION)
    by_task = lines(rows)
    tasks = list(dict.fromkeys(task_of(r) for r in rows))
    cols = min(3, len(tasks))
    fig = Figure(figsize=(3.3 * cols, 2.6 * math.ceil(len(tasks) / cols)))
    axes = fig.subplots(math.ceil(len(tasks) / cols), cols, squeeze=False).ravel()
    table, crossings = [], {}
    for ax, task in zip(axes, tasks):
        crossings[task] = {}
        for wd in sorted(by_task[task]):
            sizes = sorted(by_task[task][wd])
            means = [mean(r["val/acc"] for r in by_task[task][wd][d]) for d in sizes]
            crossings[task][f"{wd:g}"] = crossing(dict(zip(sizes, means)))
            line, = ax.plot(sizes, means, "o-", ms=3, label=f"wd {wd:g}")
            for d in sizes:
                for r in by_task[task][wd][d]:
                    table.append({"task": task, "weight_decay": wd, "D'": d, "val/acc": r["val/acc"],
                                  "train/acc": r["train/acc"], "step": int(r["step"]), "converged": r["converged"],
                                  "run": r["run"]})
                    if not r["converged"]:  # open circle: stopped by the step cap
                        ax.scatter([d], [r["val/acc"]], s=40, facecolors="none", edgecolors=line.get_color())
        ax.set(xscale="log", title=task, ylim=(-0.02, 1.02))
        ax.tick_params(labelsize=7)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.supxlabel("D' (training pairs after the switch)")
    fig.supylabel("final val/acc")
    fig.tight_layout()
    save_figure(fig, sweep_dir, "ungrok_tasks.png", TAG)
    with (sweep_dir / "ungrok_tasks.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    result = {"runs": len(rows), "crossing_0.5": crossings,
              "not_converged": [r["run"] for r in rows if not r["converged"]]}
    (sweep_dir / "ungrok_tasks.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from lit_grok.reports import main

    main(report)
