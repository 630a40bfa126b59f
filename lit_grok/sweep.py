"""Sweeps: one YAML describes a grid of runs on top of a base config; one command runs them all.

    python -m lit_grok sweep --config configs/cpu/efficiency.yaml

Every run is ``python -m lit_grok fit -c <base> --<key>=<value> ...`` logged to TensorBoard under
``<save_dir>/<name>/<run id>/version_0/``. A finished run leaves ``result.json`` there (its parameters,
final metrics, grok events and convergence) and is skipped when the sweep is run again; an unfinished
one is started afresh. ``<save_dir>/<name>/summary.csv`` is rewritten after every run. How a run executes
lives in one function (``execute``), so a later executor can batch runs without changing this interface.
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional
from unittest.mock import patch

from jsonargparse import CLI

RESULT = "result.json"


def expand(grids: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """The union of each grid's cartesian product, in order, without duplicates."""
    runs: list[dict[str, Any]] = []
    for grid in grids:
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid entry {key!r} must be a non-empty list of values, got {values!r}.")
        for combo in itertools.product(*grid.values()):
            run = dict(zip(grid.keys(), combo))
            if run not in runs:
                runs.append(run)
    return runs


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_id(params: dict[str, Any]) -> str:
    """A readable folder name: the last component of each key with its value, e.g. ``train_size=200-seed=1``."""
    return "-".join(f"{key.split('.')[-1]}={_text(value).replace('/', '_')}" for key, value in params.items())


def execute(base: str, overrides: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Runs one fit in this process and returns its final metrics, events and step."""
    from lit_grok.cli import main

    args = ["fit", "-c", base, *[f"--{k}={_text(v)}" for k, v in overrides.items()],
            f"--trainer.logger.init_args.save_dir={log_dir.parent.parent}",
            f"--trainer.logger.init_args.name={log_dir.parent.name}",
            "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]
    start = time.monotonic()
    with patch.object(sys, "argv", sys.argv[:1]):  # the run is described by args alone
        cli = main(args)
    result: dict[str, Any] = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    result["step"] = cli.trainer.global_step
    result["seconds"] = round(time.monotonic() - start, 2)
    for callback in cli.trainer.callbacks:  # GrokEvents, StopOnConvergence, DatasetSwap, PlateauDetector
        if hasattr(callback, "summary"):
            result.update(callback.summary())
    return result


def write_summary(sweep_dir: Path) -> Path:
    """Collects every finished run's result.json into summary.csv (one row per run)."""
    rows = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/version_0/{RESULT}"))]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path = sweep_dir / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def sweep(base: str, name: str, grids: list[dict[str, list[Any]]], overrides: Optional[dict[str, Any]] = None,
          save_dir: str = "logs", report: Optional[str] = None) -> Path:
    """Runs every combination of ``grids`` (a list of {config key: [values]}) on top of ``base``.

    Args:
        base: the config every run starts from.
        name: the sweep's folder under ``save_dir``.
        grids: each a mapping of config keys (as on the command line, without ``--``) to value lists;
            the sweep runs the union of their cartesian products.
        overrides: config keys set for every run.
        save_dir: where the sweep's folder goes.
        report: a module with ``report(sweep_dir)``, called once every run has finished.
    """
    if not Path(base).is_file():
        raise FileNotFoundError(f"base config {base!r} does not exist.")
    sweep_dir = Path(save_dir) / name
    runs = expand(grids)
    for i, params in enumerate(runs, 1):
        log_dir = sweep_dir / run_id(params) / "version_0"
        if (log_dir / RESULT).exists():
            print(f"[{i}/{len(runs)}] {run_id(params)}: done, skipped", flush=True)
            continue
        shutil.rmtree(log_dir, ignore_errors=True)  # an interrupted run starts afresh
        result = execute(base, {**(overrides or {}), **params}, log_dir)
        record = {"run": run_id(params), **params, **result}
        (log_dir / RESULT).write_text(json.dumps(record, indent=1))
        write_summary(sweep_dir)
        print(f"[{i}/{len(runs)}] {run_id(params)}: step {result['step']}, {result['seconds']} s", flush=True)
    summary = write_summary(sweep_dir)
    if report:
        importlib.import_module(report).report(sweep_dir)
    return summary


def main(args: Optional[list[str]] = None) -> None:
    """``python -m lit_grok sweep --config SWEEP.yaml``; a bad sweep file ends with one line, not a traceback."""
    try:
        CLI(sweep, args=args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
