"""D_crit three ways, from files other reports wrote: the efficiency crossing (``d_crit.json`` of
``lit_grok.reports.efficiency``), the ungrokking transition (the D' at which the final val/acc, averaged
over seeds, crosses 0.5 in an ungrokking sweep's ``summary.csv``, one value per weight decay) and the
semi-grokking transition (the D at which the final val/acc of runs from scratch, averaged over seeds,
crosses 0.5). Crossings are interpolated linearly in log D between the two sizes that bracket them.

    python -m lit_grok.reports.d_crit --efficiency docs/results/efficiency_d_crit.json \
        --ungrok docs/results/ungrok_summary.csv --semigrok docs/results/semigrok_ensemble_summary.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Optional

WD = "model.init_args.optimizer.init_args.weight_decay"
OPERATION, MODULUS = "data.init_args.operation", "data.init_args.modulus"


def crossing(points: dict[int, float], level: float = 0.5) -> Optional[float]:
    """The first D, going up, where the value crosses ``level`` from below, linear in log D; None if it never does."""
    sizes = sorted(points)
    for d0, d1 in zip(sizes, sizes[1:]):
        v0, v1 = points[d0], points[d1]
        if v0 < level <= v1:
            t = (level - v0) / (v1 - v0)
            return math.exp(math.log(d0) + t * (math.log(d1) - math.log(d0)))
    return None


def _mean_by_size(rows: list[dict]) -> dict[int, float]:
    by_size = defaultdict(list)
    for row in rows:
        by_size[int(float(row.get("data/train_size") or row["data.init_args.train_size"]))].append(float(row["val/acc"]))
    return {d: mean(v) for d, v in by_size.items()}


def task_of(row: dict) -> str:
    """The task a run trained on: its operation, with the modulus where the row names one (S_5 has none);
    '' if the row names no operation."""
    operation, modulus = row.get(OPERATION) or "", row.get(MODULUS) or ""
    return operation + (f" (P={modulus})" if operation and modulus not in ("", "None", "null") else "")


def ungrok_crossings(summary: Path, default_wd: float = 1.0) -> dict[float, Optional[float]]:
    """Weight decay -> D' at which the mean final val/acc crosses 0.5. A summary of several tasks is refused:
    averaging one task's accuracy with another's would give a crossing of neither (``ungrok_crossings_by_task``)."""
    tasks = ungrok_crossings_by_task(summary, default_wd)
    if len(tasks) > 1:
        raise ValueError(f"{summary} holds {len(tasks)} tasks ({', '.join(tasks)}): their crossings are one per "
                         f"task (ungrok_crossings_by_task), not one mean.")
    return next(iter(tasks.values()), {})


def ungrok_crossings_by_task(summary: Path, default_wd: float = 1.0) -> dict[str, dict[float, Optional[float]]]:
    """Task -> weight decay -> D' at which the mean final val/acc over the task's seeds crosses 0.5."""
    with open(summary) as f:
        rows = list(csv.DictReader(f))
    groups: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[task_of(row)][float(row.get(WD) or default_wd)].append(row)
    return {task: {wd: crossing(_mean_by_size(group)) for wd, group in sorted(by_wd.items())}
            for task, by_wd in groups.items()}


def semigrok_crossing(summary: Path) -> Optional[float]:
    """D at which the mean final val/acc of runs from scratch crosses 0.5."""
    with open(summary) as f:
        return crossing(_mean_by_size(list(csv.DictReader(f))))


def efficiency_d_crit(d_crit_json: Path) -> dict:
    """D_crit from the efficiency crossing, with the per-seed values, its range over reference losses and the
    crossing at equal weight decay (all seeds, then per seed) where the report gives them."""
    result = json.loads(Path(d_crit_json).read_text())
    per_seed = result.get("per_seed", {})
    out = {"d_crit": result["d_crit"], "per_seed": {s: r["d_crit"] for s, r in per_seed.items()}}
    if result.get("over_reference_losses"):
        out["over_reference_losses"] = [min(result["over_reference_losses"].values()),
                                        max(result["over_reference_losses"].values())]
    if "at_weight_decay" in result:
        out["at_weight_decay"] = {wd: r["d_crit"] for wd, r in result["at_weight_decay"].items()}
        out["at_weight_decay_per_seed"] = {s: {wd: w["d_crit"] for wd, w in r.get("at_weight_decay", {}).items()}
                                           for s, r in per_seed.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--efficiency", type=Path)
    parser.add_argument("--ungrok", type=Path)
    parser.add_argument("--semigrok", type=Path)
    args = parser.parse_args()
    out = {}
    if args.efficiency:
        out["efficiency"] = efficiency_d_crit(args.efficiency)
    if args.ungrok:
        by_task = ungrok_crossings_by_task(args.ungrok)
        out["ungrok"] = by_task if len(by_task) > 1 else next(iter(by_task.values()), {})
    if args.semigrok:
        out["semigrok"] = semigrok_crossing(args.semigrok)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
