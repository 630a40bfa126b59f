"""Sweeps: one YAML describes a grid of runs on top of a base config; one command runs them all.

    python -m lit_grok sweep --config configs/cpu/efficiency.yaml

Every run is ``python -m lit_grok fit -c <base> --<key>=<value> ...`` logged to TensorBoard under
``<save_dir>/<name>/<run id>/version_0/``. A finished run leaves ``result.json`` there (its parameters,
final metrics, grok events and convergence) and is skipped when the sweep is run again; an unfinished
one is started afresh. ``<save_dir>/<name>/summary.csv`` is rewritten after every run.

Runs whose configs differ only in what ensemble members may differ in (``MEMBER_KEYS``: seeds, D, data
seed, labels, learning rate, weight decay, callbacks) train together, up to ``max_members`` at a time, as
one ``EnsembleModule``; each still gets its own folder, TensorBoard run, config.yaml and result.json, as
if run alone (its ``seconds`` is its share of the group's time). Runs an ensemble cannot reproduce (another
network or optimiser, minibatches, warm-up) run one at a time. An ensemble keeps ``last.ckpt`` in
``<save_dir>/<name>/.ensembles/<id>/`` (every 1000 steps and on a crash) and resumes from it when the
sweep is run again; the folder goes once the ensemble has finished.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from jsonargparse import CLI

from lit_grok.callbacks import Diverged, ModelCheckpoint
from lit_grok.callbacks.run_result import summaries
from lit_grok.callbacks.members import Members, per_member
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule
from lit_grok.runs import build, parse_config, quiet_lightning_warnings

RESULT = "result.json"
# config keys (as on the command line) in which runs of one ensemble may differ; anything else must match
MEMBER_KEYS = ("seed_everything", "data.init_args.train_size", "data.init_args.train_fraction",
               "data.init_args.data_seed", "data.init_args.random_labels", "model.init_args.optimizer.init_args.lr",
               "model.init_args.optimizer.init_args.weight_decay", "trainer.callbacks", "trainer.logger")


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


def _args(base: str, overrides: dict[str, Any], log_dir: Path) -> list[str]:
    """One run's command line (after ``fit``)."""
    return ["-c", base, *[f"--{k}={_text(v)}" for k, v in overrides.items()],
            f"--trainer.logger.init_args.save_dir={log_dir.parent.parent}",
            f"--trainer.logger.init_args.name={log_dir.parent.name}",
            "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]


def _cli(args: list[str], run: bool):
    return build(["fit", *args] if run else args, run=run)


def launches_processes(trainer: dict[str, Any]) -> bool:
    """Whether a run's Trainer starts processes of its own (DDP and the like), whose launcher re-runs the
    command line: such a run needs a command line of its own, not the sweep's."""
    strategy = str(trainer.get("strategy") or "auto")
    if any(kind in strategy for kind in ("ddp", "fsdp", "deepspeed")) or (trainer.get("num_nodes") or 1) > 1:
        return True
    devices, accelerator = trainer.get("devices", "auto"), str(trainer.get("accelerator") or "auto")
    gpus = _visible_gpus() if accelerator in ("auto", "gpu", "cuda") else 1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if str(devices).lstrip("-").isdigit():
        return (gpus if int(devices) == -1 else int(devices)) > 1
    if "," in str(devices):
        return len([d for d in str(devices).split(",") if d.strip()]) > 1
    return gpus > 1  # "auto": every visible GPU


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def execute(base: str, overrides: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Runs one fit and returns its final metrics, events and step; a run that diverges is recorded as such
    (``diverged``, ``error``) and the sweep goes on. A run that starts processes of its own (DDP) is launched
    as ``python -m lit_grok fit ...`` with its own command line; any other runs in this process. A run
    interrupted earlier (its ``checkpoints/last.ckpt`` is there) resumes from that checkpoint."""
    start = time.monotonic()
    args = _args(base, overrides, log_dir)
    last = log_dir / "checkpoints" / "last.ckpt"
    resume = [f"--ckpt_path={last}"] if last.is_file() else []  # an option of `fit`, not of the config
    if launches_processes(parse_config(args).get("trainer") or {}):
        metrics, step, extra = _execute_in_own_process(args + resume, log_dir)
    else:
        try:
            cli = _cli(args + resume, run=True)
        except Diverged as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            metrics, step = {}, error.step
            extra = {"diverged": True, "events/diverged_step": error.step, "error": str(error)}
        else:
            metrics = {k: float(v) for k, v in sorted(cli.trainer.callback_metrics.items())}
            step, extra = cli.trainer.global_step, summaries(cli.trainer.callbacks)
    # the same columns in the same order as an ensemble's runs (execute_group)
    return {**metrics, "step": step, "seconds": round(time.monotonic() - start, 2), **extra}


def _execute_in_own_process(args: list[str], log_dir: Path) -> tuple[dict[str, float], int, dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "run_result.json"
    command = [sys.executable, "-m", "lit_grok", "fit", *args, "--trainer.callbacks+=lit_grok.callbacks.RunResult",
               f"--trainer.callbacks.path={path}"]
    process = subprocess.run(command)
    if not path.is_file():
        raise RuntimeError(f"the run's process ({' '.join(command)}) exited with status {process.returncode} "
                           f"and no result.")
    result = json.loads(path.read_text())
    path.unlink()
    return result["metrics"], result["step"], result["summaries"]


def _drop(config: dict[str, Any], key: str) -> None:
    *path, last = key.split(".")
    for name in path:
        config = config.get(name) or {}
    if isinstance(config, dict):
        config.pop(last, None)


def group_key(config: dict[str, Any]) -> str:
    """What runs of one ensemble must share: the config without ``MEMBER_KEYS``."""
    config = json.loads(json.dumps(config, default=str))
    for key in MEMBER_KEYS:
        _drop(config, key)
    return json.dumps(config, sort_keys=True)


class NotAnEnsemble(ValueError):
    """Runs that cannot train as one ensemble (another optimiser, warm-up, ...): the sweep runs them one by one."""


def group_checkpoints(log_dirs: list[Path]) -> Path:
    """Where an ensemble of these runs keeps its checkpoint while it trains: ``<sweep>/.ensembles/<id>/``."""
    runs = "\n".join(d.parent.name for d in log_dirs)
    return log_dirs[0].parent.parent / ".ensembles" / hashlib.sha1(runs.encode()).hexdigest()[:12]


def execute_group(base: str, overrides: list[dict[str, Any]], log_dirs: list[Path]) -> list[dict[str, Any]]:
    """Trains K compatible runs as one ensemble and returns each run's result, as ``execute`` would.

    Raises ``NotAnEnsemble`` (before training anything) when the runs cannot be one ensemble (see
    ``EnsembleModule.from_modules``); an error while training propagates as it is.
    """
    start = time.monotonic()
    clis = [_cli(_args(base, o, d), run=False) for o, d in zip(overrides, log_dirs)]
    try:
        model = EnsembleModule.from_modules([c.model for c in clis], seeds=[c.config.seed_everything for c in clis])
        data = EnsembleDataModule.from_datamodules([c.datamodule for c in clis])
        members = Members([[cb for cb in c.trainer.callbacks if per_member(cb)] for c in clis],
                          log_dirs=[str(d) for d in log_dirs])
        members.check_data(data)
    except ValueError as error:
        raise NotAnEnsemble(str(error)) from error
    folder = group_checkpoints(log_dirs)  # last.ckpt every 1000 steps and on a crash; resumed from on a rerun
    checkpoint = ModelCheckpoint(dirpath=folder, save_top_k=0, save_last=True, every_n_train_steps=1000,
                                 save_on_exception=True)
    trainer_args = {**clis[0].config_init["trainer"], "callbacks": [members, checkpoint],
                    "logger": False, "enable_checkpointing": True, "enable_progress_bar": False,
                    "enable_model_summary": False}
    for cli, log_dir in zip(clis, log_dirs):  # as SaveConfigCallback writes it for a single run
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
    trainer = pl.Trainer(**trainer_args)
    last = folder / "last.ckpt"
    trainer.fit(model, data, ckpt_path=str(last) if last.exists() else None)
    shutil.rmtree(folder, ignore_errors=True)
    seconds = round((time.monotonic() - start) / len(clis), 2)
    return [{**metrics, "step": step, "seconds": seconds, **summaries(mine)}
            for (metrics, step), mine in zip(members.results(trainer), members.callbacks)]


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


def _groups(base: str, overrides: dict[str, Any], pending: list[tuple[int, dict[str, Any], Path]],
            max_members: int) -> list[list[tuple[int, dict[str, Any], Path]]]:
    """Pending runs in groups of at most ``max_members`` with equal ``group_key``, in the sweep's order."""
    if max_members == 1 or len(pending) < 2:
        return [[run] for run in pending]
    by_key: dict[str, list] = {}
    for run in pending:
        config = parse_config(_args(base, {**overrides, **run[1]}, run[2]))
        by_key.setdefault(group_key(config), []).append(run)
    groups = [runs[i:i + max_members] for runs in by_key.values() for i in range(0, len(runs), max_members)]
    return sorted(groups, key=lambda g: g[0][0])


Group = list[tuple[int, dict[str, Any], Path]]  # (position in the sweep, grid parameters, run folder)


def run_group(base: str, overrides: dict[str, Any], group: Group) -> list[dict[str, Any]]:
    """Trains one group (an ensemble, or a run alone) wherever it is called (this process or a Ray worker)
    and returns each run's record: its id, parameters and result. An error while training is recorded as
    the group's runs' failure (``failed``, ``error``) rather than raised, so that the sweep goes on; such
    runs are trained again when the sweep is run again, from their checkpoint where they have one."""
    quiet_lightning_warnings()  # also in a Ray worker, which did not run the command line's setup
    resumed = len(group) > 1 and (group_checkpoints([d for _, _, d in group]) / "last.ckpt").exists()
    for _, _, log_dir in group:
        if not resumed and not (log_dir / "checkpoints" / "last.ckpt").is_file():
            shutil.rmtree(log_dir, ignore_errors=True)  # an interrupted run without a checkpoint starts afresh
    results, together = None, False
    if len(group) > 1:
        try:
            results = execute_group(base, [{**overrides, **p} for _, p, _ in group], [d for _, _, d in group])
            together = True
        except NotAnEnsemble as error:
            print(f"runs {', '.join(str(i) for i, _, _ in group)} cannot train as one ensemble ({error}); "
                  f"running them one at a time", flush=True)
        except Exception as error:  # noqa: BLE001 - a failed group is its runs' result, not the sweep's end
            results = [_failure([i for i, _, _ in group], error)] * len(group)
    if results is None:
        results = []
        for i, p, d in group:
            try:
                results.append(execute(base, {**overrides, **p}, d))
            except SystemExit as exit:  # the run's command line refused its config, in one line on stderr
                results.append(_failure([i], RuntimeError(f"its config was refused (exit status {exit.code}); "
                                                          f"the error line printed above it says why")))
            except Exception as error:  # noqa: BLE001
                results.append(_failure([i], error))
    return _records(group, results, together)


def _failure(positions: list[int], error: BaseException) -> dict[str, Any]:
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    print(f"error: run{'s' if len(positions) > 1 else ''} {', '.join(map(str, positions))} failed: {message}",
          file=sys.stderr, flush=True)
    return {"failed": True, "error": message}


def _lost(call: tuple, message: str) -> list[dict[str, Any]]:
    """The records of a group whose Ray worker kept dying."""
    group = call[2]
    return _records(group, [{"failed": True, "error": message} for _ in group], False)


def _records(group: Group, results: list[dict[str, Any]], together: bool) -> list[dict[str, Any]]:
    return [{"position": i, "log_dir": str(d), "together": together and len(group),
             "record": {"run": run_id(p), **p, **r}} for (i, p, d), r in zip(group, results)]


def _record(records: list[dict[str, Any]], total: int) -> None:
    """Writes each run's result.json (on the machine that runs the sweep) and prints one line per run."""
    for entry in records:
        record, log_dir = entry["record"], Path(entry["log_dir"])
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / RESULT).write_text(json.dumps(record, indent=1))
        status = f"failed ({record['error']})" if record.get("failed") else \
            f"step {record['step']}, {record['seconds']} s"
        print(f"[{entry['position']}/{total}] {record['run']}: {status}"
              + (f" (ensemble of {entry['together']})" if entry["together"] else ""), flush=True)


def group_cost(base: str, overrides: dict[str, Any], group: Group) -> float:
    """A group's expected cost, for scheduling the longest first: steps x training pairs x runs."""
    config = parse_config(_args(base, {**overrides, **group[0][1]}, group[0][2]))
    data = (config.get("data") or {}).get("init_args") or {}
    size = data.get("train_size") or (data.get("train_fraction") or 1.0) * (data.get("modulus") or 100) ** 2
    steps = (config.get("trainer") or {}).get("max_steps") or 1
    return float(max(steps, 1) * size * len(group))


def sweep(base: Optional[str] = None, name: Optional[str] = None, grids: Optional[list[dict[str, list[Any]]]] = None,
          overrides: Optional[dict[str, Any]] = None,
          save_dir: str = "logs", report: Optional[str] = None, max_members: int = 16, workers: int = 1,
          address: Optional[str] = None) -> Path:
    """Runs every combination of ``grids`` (a list of {config key: [values]}) on top of ``base``.

    Args:
        base: the config every run starts from.
        name: the sweep's folder under ``save_dir``.
        grids: each a mapping of config keys (as on the command line, without ``--``) to value lists;
            the sweep runs the union of their cartesian products.
        overrides: config keys set for every run.
        save_dir: where the sweep's folder goes.
        report: a module with ``report(sweep_dir)``, called once every run has finished.
        max_members: the most runs trained together as one ensemble; 1 runs them one at a time.
        workers: groups (ensembles or single runs) trained at once, each in a Ray worker with its share of
            this machine's cores; 1 trains them one after another in this process (no Ray needed).
        address: a Ray cluster to run the groups on (``ray start --head`` prints it); its nodes' CPUs are
            shared among ``workers`` workers.
    """
    if not base or not name:
        raise ValueError("a sweep needs base (the config every run starts from) and name (its folder).")
    if not grids:
        raise ValueError("a sweep needs grids: a list of {config key: [values]}.")
    if not Path(base).is_file():
        raise FileNotFoundError(f"base config {base!r} does not exist.")
    if max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members}.")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    sweep_dir = Path(save_dir) / name
    runs = expand(grids)
    pending = []
    for i, params in enumerate(runs, 1):
        log_dir = sweep_dir / run_id(params) / "version_0"
        if (log_dir / RESULT).exists() and not json.loads((log_dir / RESULT).read_text()).get("failed"):
            print(f"[{i}/{len(runs)}] {run_id(params)}: done, skipped", flush=True)
        else:
            pending.append((i, params, log_dir))
    groups = _groups(base, overrides or {}, pending, max_members)
    if workers == 1 and address is None:
        for group in groups:
            _record(run_group(base, overrides or {}, group), len(runs))
            write_summary(sweep_dir)
    else:
        from lit_grok.distributed import run_on_ray  # Ray is an optional extra

        costs = [group_cost(base, overrides or {}, group) for group in groups]
        calls = [(base, overrides or {}, g) for g in groups]
        for records in run_on_ray(run_group, calls, costs, workers, address, lost=_lost):
            _record(records, len(runs))
            write_summary(sweep_dir)  # by the driver alone, as each group's results arrive
    summary = write_summary(sweep_dir)
    if report:
        importlib.import_module(report).report(sweep_dir)
    return summary


def main(args: Optional[list[str]] = None) -> None:
    """``python -m lit_grok sweep --config SWEEP.yaml``; a bad sweep file ends with one line, not a traceback."""
    try:
        summary = CLI(sweep, args=args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    failed = [row["run"] for row in csv.DictReader(summary.open()) if row.get("failed") == "True"]
    if failed:
        sys.exit(f"error: {len(failed)} run(s) failed ({', '.join(failed)}); summary.csv holds their errors, and "
                 f"running the sweep again trains them again.")
