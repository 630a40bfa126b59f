"""Where a config's convergence rule would stop each run of a curves file: replays the config's
``StopOnConvergence`` on every run's recorded validations (``lit_grok.reports.curves`` writes them), so a rule
changed after runs finished says which of them it would have stopped elsewhere, without training them again.

    python -m lit_grok.reports.rule_check configs/ungrok.yaml docs/results/p113/ungrok_curves.csv

One row per run: its last recorded step and val/acc, and the step and val/acc at which the rule fires ('-':
not within the recorded curve, so the run ended before the rule would have stopped it).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path
from typing import Optional

import yaml

from lit_grok.callbacks import StopOnConvergence
from lit_grok.reports import refuse


def rule_of(config: Path) -> tuple[dict, float, float]:
    """The StopOnConvergence arguments, lr and weight decay a config sets."""
    cfg = yaml.safe_load(Path(config).read_text())
    rules = [c.get("init_args", {}) for c in cfg.get("trainer", {}).get("callbacks", [])
             if str(c.get("class_path", "")).endswith("StopOnConvergence")]
    if not rules:
        raise ValueError(f"{config} has no StopOnConvergence among trainer.callbacks.")
    optimizer = cfg["model"]["init_args"]["optimizer"]["init_args"]
    return rules[0], float(optimizer["lr"]), float(optimizer.get("weight_decay", 0.0))


def replay(rule: dict, lr: float, weight_decay: float, history: list[tuple[int, dict[str, float]]]
           ) -> Optional[int]:
    """The step at which ``StopOnConvergence(**rule)`` stops a run with these (step, metrics) validations."""
    stop = StopOnConvergence(**rule)
    return next((step for step, metrics in history
                 if stop.update(step, [metrics[m] for m in stop.monitor], lr * weight_decay)), None)


def check(config: Path, curves: list[Path]) -> list[dict]:
    """One row per run of the curves files."""
    rule, lr, default_decay = rule_of(config)
    rows = []
    for path in curves:
        runs: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                runs[r["run"]].append((int(r["step"]), {k: float(v) for k, v in r.items() if k not in ("run", "step")}))
        for run, history in runs.items():
            found = re.search(r"weight_decay=([0-9.]+(?:[eE][+-]?[0-9]+)?)", run)
            decay = float(found.group(1)) if found else default_decay
            history.sort(key=lambda item: item[0])
            at = replay(rule, lr, decay, history)
            by_step = dict(history)
            rows.append({"run": run, "weight_decay": decay, "last_step": history[-1][0],
                         "last_val_acc": history[-1][1].get("val/acc"), "rule_step": at,
                         "rule_val_acc": None if at is None else by_step[at].get("val/acc")})
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_grok.reports.rule_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a config with a StopOnConvergence callback")
    parser.add_argument("curves", type=Path, nargs="+", help="curves.csv files (lit_grok.reports.curves)")
    args = parser.parse_args(argv)
    for path in (args.config, *args.curves):
        if not path.is_file():
            refuse(f"error: {path} does not exist.")
    try:
        rows = check(args.config, args.curves)
    except (ValueError, KeyError) as error:
        refuse(f"error: {error}")
    print("| run | last step | val/acc there | rule stops at | val/acc there |\n|---|---|---|---|---|")
    for r in rows:
        rule_at = "- | -" if r["rule_step"] is None else f"{r['rule_step']} | {r['rule_val_acc']:.3f}"
        print(f"| {r['run']} | {r['last_step']} | {r['last_val_acc']:.3f} | {rule_at} |")


if __name__ == "__main__":
    main()
