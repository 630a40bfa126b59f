"""Where every run of a sweep stands, finished or not: one line per run folder with its state (done, failed,
diverged, or unfinished: running now or interrupted), its last validated step and metrics, and how long ago
it last wrote, read from result.json and TensorBoard. A sweep's pre-trainings are listed first, as
``pretrain/<run>``. Given the sweep file instead of its folder, it also
lists the runs and pre-trainings that have no folder: ``kept`` where the sweep will not train them (a
``restore`` summary records the run finished, or ``pretrain.weights`` holds the network), else ``not
started``. For checking on a long sweep without opening TensorBoard; it
writes nothing.

    python -m lit_grok.reports.status logs/grok-time
    python -m lit_grok.reports.status configs/grok_time.yaml
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from lit_grok.reports import refuse
from lit_grok.reports.curves import read_curves
from lit_grok.sweep import PRETRAIN_DIR, RESULT, expand, finished_rows, kept_network, pretrain_plan, run_id

TAGS = ("val/acc", "train/loss", "norm/params")


def state(result: Optional[dict[str, Any]], written_since: bool = False) -> str:
    """done, failed or diverged from a run's result.json; unfinished without one, or when a failed run has
    written since (a rerun of the sweep is training it again)."""
    if result is None or (result.get("failed") and written_since):
        return "unfinished"
    if result.get("failed"):
        return "failed"
    return "diverged" if result.get("diverged") else "done"


def status(sweep_dir: Path, now: Optional[float] = None, planned: Optional[dict[str, str]] = None
           ) -> list[dict[str, Any]]:
    """One row per run folder (``<sweep_dir>/pretrain/<run>/version_0``, then ``<sweep_dir>/<run>/version_0``):
    run, state, step (the last validation's: the last step any of TAGS was logged at, so that a pre-training
    on every pair, without val/acc, has one), the TAGS there, and seconds since the run last wrote a file;
    then one row per run named in ``planned`` (run -> the state to show: kept, not started) that has no folder."""
    now = time.time() if now is None else now
    rows = []
    sweep_dir = Path(sweep_dir)
    for run_dir in sorted(sweep_dir.glob(f"{PRETRAIN_DIR}/*/version_0")) + sorted(sweep_dir.glob("*/version_0")):
        path = run_dir / RESULT
        result = json.loads(path.read_text()) if path.is_file() else None
        curves = read_curves(run_dir, TAGS)
        last = max((max(curves[tag]) for tag in TAGS if curves.get(tag)), default=None)
        written = max((p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file() and p != path), default=None)
        retried = result is not None and written is not None and written > path.stat().st_mtime
        name = str(run_dir.parent.relative_to(sweep_dir))
        rows.append({"run": name, "state": state(result, retried), "step": last,
                     **{tag: curves.get(tag, {}).get(last) for tag in TAGS},
                     "idle_s": None if written is None else round(now - written)})
    started = {row["run"] for row in rows}
    rows += [{"run": run, "state": shown, "step": None, **dict.fromkeys(TAGS), "idle_s": None}
             for run, shown in (planned or {}).items() if run not in started]
    return rows


def sweep_file(path: Path) -> tuple[Path, dict[str, str]]:
    """A sweep file's folder (``save_dir``/``name``) and its pre-trainings (``pretrain/<run>``) and runs, each
    with the state to show while it has no folder: ``kept`` when the sweep will not train it, else ``not
    started``."""
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict) or not config.get("name") or not config.get("grids"):
        raise ValueError(f"{path} is not a sweep file (it needs name and grids).")
    runs, pretrain = expand(config["grids"]), config.get("pretrain")
    kept = {row["run"] for summary in config.get("restore") or [] for row in finished_rows(summary)}
    planned = {f"{PRETRAIN_DIR}/{run_id(params)}": "kept" if kept_network(pretrain, params) else "not started"
               for params in (pretrain_plan(pretrain, runs) if pretrain else [])}
    planned.update({run_id(params): "kept" if run_id(params) in kept else "not started" for params in runs})
    return Path(config.get("save_dir") or "logs") / config["name"], planned


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not Path(argv[0]).exists():
        refuse("usage: python -m lit_grok.reports.status SWEEP_DIR_OR_FILE (a sweep's folder, e.g. "
                 "logs/grok-time, or its sweep file, e.g. configs/grok_time.yaml)")
    sweep_dir, planned = Path(argv[0]), {}
    if sweep_dir.is_file():
        try:
            sweep_dir, planned = sweep_file(sweep_dir)
        except (ValueError, FileNotFoundError, yaml.YAMLError) as error:
            refuse(f"error: {error}")
    rows = status(sweep_dir, planned=planned)
    if not rows:
        refuse(f"error: {sweep_dir} holds no run folders (<run>/version_0).")
    columns = list(rows[0])
    table = [columns] + [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


if __name__ == "__main__":
    main(sys.argv[1:])
