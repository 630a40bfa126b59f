"""Sweeps: one YAML describes a grid of runs on top of a base config; one command runs them all.

    python -m lit_grok sweep --config configs/cpu/efficiency.yaml

Every run is ``python -m lit_grok fit -c <base> --<key>=<value> ...`` logged to TensorBoard under
``<save_dir>/<name>/<run id>/version_0/``. A finished run leaves ``result.json`` there (its parameters,
final metrics, grok events and convergence) and is skipped when the sweep is run again; an unfinished
one resumes from its ``checkpoints/last.ckpt`` (or starts afresh without one), and a failed one (recorded
with ``failed`` and its ``error``) is trained again. ``restore: [CSV, ...]`` names summaries of earlier runs of
the sweep kept elsewhere (``logs/`` is not in git; a results page keeps its summary.csv): a run recorded there
counts as done on a machine that never trained it, so a fresh checkout trains only what is missing.
``<save_dir>/<name>/summary.csv`` is rewritten after every run, by the sweep's process alone. ``--workers N``
trains N groups at once on Ray (``lit_grok.distributed``); ``lit_grok.execution`` trains one group wherever it
is called.

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
import importlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from jsonargparse import CLI

from lit_grok.branching import read_checkpoint, save_network
from lit_grok.execution import Group, lost_records, run_args, run_group, run_id
from lit_grok.runs import parse_config, snapshot_config

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


def _groups(base: str, overrides: dict[str, Any], pending: Group, max_members: int) -> list[Group]:
    """Pending runs in groups of at most ``max_members`` with equal ``group_key``, in the sweep's order."""
    if max_members == 1 or len(pending) < 2:
        return [[run] for run in pending]
    by_key: dict[str, list] = {}
    for run in pending:
        config = parse_config(run_args(base, {**overrides, **run[1]}, run[2]))
        by_key.setdefault(group_key(config), []).append(run)
    groups = [runs[i:i + max_members] for runs in by_key.values() for i in range(0, len(runs), max_members)]
    return sorted(groups, key=lambda g: g[0][0])


class Progress:
    """The sweep's ``[k/N]`` lines: k counts the runs finished so far (those skipped as done first), whatever
    order the groups finish in."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.skipped = total, 0, 0

    def line(self, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {text}", flush=True)


def _record(records: list[dict[str, Any]], progress: Progress,
            finished: Optional[Callable[[dict[str, Any], Path], None]] = None) -> None:
    """Writes each run's result.json (on the machine that runs the sweep) and prints one line per run; then
    calls ``finished(record, log_dir)`` for each run that did not fail."""
    for entry in records:
        record, log_dir = entry["record"], Path(entry["log_dir"])
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / RESULT).write_text(json.dumps(record, indent=1))
        status = f"failed ({record['error']})" if record.get("failed") else \
            f"step {record['step']}, {record['seconds']} s"
        progress.line(f"{record['run']}: {status}" + (f" (ensemble of {entry['together']})" if entry["together"] else ""))
        if finished is not None and not record.get("failed"):
            finished(record, log_dir)


def group_config(base: str, overrides: dict[str, Any], group: Group) -> dict[str, Any]:
    """The parsed config of a group's first run (what its runs share: trainer, network, task)."""
    return parse_config(run_args(base, {**overrides, **group[0][1]}, group[0][2]))


def group_cost(config: dict[str, Any], runs: int) -> float:
    """A group's expected cost, for scheduling the longest first: steps x training pairs x runs."""
    data = (config.get("data") or {}).get("init_args") or {}
    size = data.get("train_size") or (data.get("train_fraction") or 1.0) * (data.get("modulus") or 100) ** 2
    steps = (config.get("trainer") or {}).get("max_steps") or 1
    return float(max(steps, 1) * size * runs)


class ReportFailed(RuntimeError):
    """A sweep's runs finished but its report raised; the message says how to rerun the report alone."""


def failed_runs(summary: Path) -> list[str]:
    """The runs a sweep's summary.csv records as failed (a rerun of the sweep trains them again)."""
    return [row["run"] for row in csv.DictReader(summary.open()) if row.get("failed") == "True"]


def _failed_line(failed: list[str]) -> str:
    return (f"{len(failed)} run(s) failed ({', '.join(failed)}); summary.csv holds their errors, and running the "
            f"sweep again trains them again")


INIT_FROM = "model.init_args.init_from"
SNAPSHOT = "base.yaml"  # the base config as the sweep read it when it started
PRETRAIN_DIR = "pretrain"


def pretrain_plan(pretrain: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct values of ``pretrain["keys"]`` among the runs, in the sweep's order: one pre-training each."""
    if not {"base", "keys"} <= set(pretrain) <= {"base", "keys", "overrides", "weights"} \
            or not isinstance(pretrain["keys"], list) or not pretrain["keys"]:
        raise ValueError(f"pretrain must be {{base: CONFIG, keys: [config keys], overrides: {{...}} (optional), "
                         f"weights: FOLDER (optional)}}, got {pretrain!r}.")
    if not Path(pretrain["base"]).is_file():
        raise FileNotFoundError(f"pretrain base config {pretrain['base']!r} does not exist.")
    if pretrain.get("weights") and Path(pretrain["weights"]).exists() and not Path(pretrain["weights"]).is_dir():
        raise ValueError(f"pretrain weights {pretrain['weights']!r} is a file: give the folder that holds (or is to "
                         f"hold) the networks, one <run id>.ckpt each.")
    plan: list[dict[str, Any]] = []
    for run in runs:
        missing = [key for key in pretrain["keys"] if key not in run]
        if missing:
            raise ValueError(f"pretrain key(s) {missing} are not in every grid: each run must set them.")
        params = {key: run[key] for key in pretrain["keys"]}
        if params not in plan:
            plan.append(params)
    return plan


def _train(base: str, overrides: dict[str, Any], groups: list[Group], progress: Progress, sweep_dir: Path,
           workers: int, address: Optional[str], runs_per_gpu: int = 1,
           finished: Optional[Callable[[dict[str, Any], Path], None]] = None) -> None:
    """Trains the groups here (one after another) or on Ray, recording each run as its group finishes."""
    if workers == 1 and address is None:
        for group in groups:
            _record(run_group(base, overrides, group), progress, finished)
            write_summary(sweep_dir)
        return
    from lit_grok.distributed import device_count, run_on_ray  # Ray is an optional extra

    configs = [group_config(base, overrides, group) for group in groups]
    trainers = [config.get("trainer") or {} for config in configs]
    calls = []
    for group, trainer in zip(groups, trainers):
        devices = trainer.get("devices", "auto")
        # a group sees only the GPUs Ray gave it, numbered from 0: devices named by index become a count
        named = isinstance(devices, (list, tuple)) or "," in str(devices)
        calls.append((base, {**overrides, "trainer.devices": device_count(devices)} if named else overrides, group))
    costs = [group_cost(config, len(group)) for config, group in zip(configs, groups)]
    for records in run_on_ray(run_group, calls, costs, workers, address, lost=lost_records, trainers=trainers,
                              runs_per_gpu=runs_per_gpu):
        _record(records, progress, finished)
        write_summary(sweep_dir)  # by the driver alone, as each group's results arrive


def _cell(text: str) -> Any:
    """A summary.csv cell as the result.json value it was written from: bool, int, float or string."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def finished_rows(summary: str) -> list[dict[str, str]]:
    """The rows of a kept summary.csv (``restore``) that record a finished run, not a failed one."""
    if not Path(summary).is_file():
        raise FileNotFoundError(f"restore: {summary!r} does not exist.")
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "run" not in rows[0]:
        raise ValueError(f"restore: {summary} has no 'run' column: give a sweep's summary.csv.")
    return [row for row in rows if row.get("failed") != "True"]


def kept_path(pretrain: dict[str, Any], params: dict[str, Any]) -> Optional[Path]:
    """Where ``pretrain["weights"]`` keeps the network of the pre-training with these key values (None
    without ``weights``), whether or not it is there yet."""
    return Path(pretrain["weights"]) / f"{run_id(params)}.ckpt" if pretrain.get("weights") else None


def kept_network(pretrain: dict[str, Any], params: dict[str, Any]) -> Optional[Path]:
    """The network ``pretrain["weights"]`` keeps for the pre-training with these key values, if it has one."""
    path = kept_path(pretrain, params)
    return path if path is not None and path.is_file() else None


def restore_runs(sweep_dir: Path, runs: list[dict[str, Any]], summaries: list[str]) -> int:
    """Writes result.json for each of ``runs`` that a summary CSV records as finished and not failed, and that
    has no result.json here (``restored_from`` names the CSV); returns how many. A row whose run is not in this
    sweep's grid is left out; a row without a ``run`` column's name is refused in one line."""
    wanted = {run_id(params): params for params in runs}
    restored = 0
    for summary in summaries:
        for row in finished_rows(summary):
            params = wanted.get(row["run"])
            result = sweep_dir / row["run"] / "version_0" / RESULT
            if params is None or result.exists():
                continue
            record = {**params, **{key: _cell(value) for key, value in row.items() if value not in ("", None)}}
            result.parent.mkdir(parents=True, exist_ok=True)
            result.write_text(json.dumps({**record, "restored_from": summary}, indent=1))
            restored += 1
    return restored


def _pending(sweep_dir: Path, runs: list[dict[str, Any]], progress: Progress) -> Group:
    """The runs without a successful result.json (the others are skipped, one line each)."""
    pending = []
    for i, params in enumerate(runs, 1):
        log_dir = sweep_dir / run_id(params) / "version_0"
        if (log_dir / RESULT).exists() and not json.loads((log_dir / RESULT).read_text()).get("failed"):
            progress.skipped += 1
            progress.line(f"{run_id(params)}: done, skipped")
        else:
            pending.append((i, params, log_dir))
    return pending


def _pretrained(sweep_dir: Path, pretrain: dict[str, Any], plan: list[dict[str, Any]], workers: int,
                address: Optional[str], runs_per_gpu: int) -> dict[str, str]:
    """Trains the pre-trainings that have not finished; returns run id -> its network, for init_from: its
    last.ckpt, or with ``weights: FOLDER`` the kept ``FOLDER/<run id>.ckpt`` (written there once trained)."""
    folder = sweep_dir / PRETRAIN_DIR
    kept = {run_id(params): kept_path(pretrain, params) for params in plan} if pretrain.get("weights") else {}
    ready = {name for name, out in kept.items() if out.is_file()}
    progress = Progress(len(plan))
    for name in ready:
        read_checkpoint(str(kept[name]), "pretrain weights")  # a broken file: one line, before any run
        progress.skipped += 1
        progress.line(f"{name}: kept in {kept[name]}, not trained")
    pending = _pending(folder, [params for params in plan if run_id(params) not in ready], progress)
    last = {run_id(params): folder / run_id(params) / "version_0" / "checkpoints" / "last.ckpt" for params in plan}

    def keep(record: dict[str, Any], log_dir: Path) -> None:  # as each one finishes: a stopped sweep keeps it
        if record["run"] in kept:
            save_network(str(log_dir / "checkpoints" / "last.ckpt"), kept[record["run"]], record)

    _train(pretrain["base"], pretrain.get("overrides") or {}, [[run] for run in pending], progress, folder, workers,
           address, runs_per_gpu, keep)
    failed = failed_runs(write_summary(folder))
    if failed:
        raise ValueError(f"pre-training {', '.join(failed)} failed (its error is in {folder}/summary.csv); the "
                         f"runs that start from it were not trained. Running the sweep again trains it again.")
    for name, out in kept.items():  # finished here before weights was set
        if not out.is_file():
            keep(json.loads((last[name].parents[1] / RESULT).read_text()), last[name].parents[1])
    return {name: str(kept.get(name, path)) for name, path in last.items()}


def sweep(base: Optional[str] = None, name: Optional[str] = None, grids: Optional[list[dict[str, list[Any]]]] = None,
          overrides: Optional[dict[str, Any]] = None,
          save_dir: str = "logs", report: Optional[str] = None, max_members: int = 16, workers: int = 1,
          address: Optional[str] = None, pretrain: Optional[dict[str, Any]] = None, runs_per_gpu: int = 1,
          restore: Optional[list[str]] = None) -> Path:
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
        pretrain: ``{base: CONFIG, keys: [config keys], overrides: {...}, weights: FOLDER}``: before the runs,
            train ``base`` (with ``overrides``, if given) once per distinct value of ``keys`` among them, with those
            keys set, and start each run from its pre-trained network (``model.init_args.init_from``, its
            ``last.ckpt``). With ``weights``, a network kept there (``<run id>.ckpt``, weights only) is used
            instead of training it, and each one trained is written there.
        runs_per_gpu: on Ray, how many one-GPU groups share a GPU (each asks for 1 / runs_per_gpu of one); a
            run at this model size uses a few percent of a GPU.
        restore: summary CSVs of this sweep's runs trained elsewhere (e.g. committed beside a results page): the
            runs they record as finished are skipped and appear in the summary and the report, marked
            ``restored_from``. Runs already finished here keep their own result.
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
    if runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be >= 1, got {runs_per_gpu}.")
    if runs_per_gpu > 1 and workers == 1 and address is None:
        raise ValueError(f"runs_per_gpu {runs_per_gpu} shares GPUs among runs trained at once: it needs --workers "
                         f"above 1 (or --address), else the runs train one after another.")
    overrides = overrides or {}
    sweep_dir = Path(save_dir) / name
    runs = expand(grids)
    plan = pretrain_plan(pretrain, runs) if pretrain else []
    base = snapshot_config(base, sweep_dir / SNAPSHOT)  # a YAML edited while the sweep runs changes nothing
    if pretrain:
        pretrain = {**pretrain, "base": snapshot_config(pretrain["base"], sweep_dir / PRETRAIN_DIR / SNAPSHOT)}
    if restore:
        restore_runs(sweep_dir, runs, restore)
    progress = Progress(len(runs))
    pending = _pending(sweep_dir, runs, progress)
    if pretrain and pending:
        # only the networks the pending runs start from: a task whose runs are all done needs none
        plan = pretrain_plan(pretrain, [params for _, params, _ in pending])
        checkpoints = _pretrained(sweep_dir, pretrain, plan, workers, address, runs_per_gpu)
        pending = [(i, {**params, INIT_FROM: checkpoints[run_id({k: params[k] for k in pretrain["keys"]})]}, log_dir)
                   for i, params, log_dir in pending]
    groups = _groups(base, overrides, pending, max_members)
    _train(base, overrides, groups, progress, sweep_dir, workers, address, runs_per_gpu)
    summary = write_summary(sweep_dir)
    before = _files(sweep_dir)
    if report:
        try:
            importlib.import_module(report).report(sweep_dir)
        except Exception as error:  # noqa: BLE001 - the runs are done: say so, and how to rerun the report alone
            failed = failed_runs(summary)
            raise ReportFailed(f"the runs are done (summary: {summary}), but the report {report} failed: "
                               f"{type(error).__name__}: {error}. Rerun it alone with "
                               f"`python -m {report} {sweep_dir}`."
                               + (f" Also, {_failed_line(failed)}." if failed else "")) from error
    ids = {run_id(params) for params in runs}  # the folder may hold other sweeps' runs (a narrowed grid)
    rows = [row for row in csv.DictReader(summary.open()) if row["run"] in ids]
    written = sorted(str(p) for p, stamp in _files(sweep_dir).items() if before.get(p) != stamp)
    print(f"sweep {sweep_dir}: {len(runs)} run{'s' * (len(runs) != 1)} ({progress.done - progress.skipped} trained "
          f"now, {progress.skipped} skipped "
          f"as done), {sum(r.get('failed') == 'True' for r in rows)} failed, "
          f"{sum(r.get('diverged') == 'True' for r in rows)} diverged; summary: {summary}"
          + (f"; report: {', '.join(written)}" if written else ""), flush=True)
    return summary


def _files(folder: Path) -> dict[Path, int]:
    """The files directly in a folder, with their modification times (what a report writes there)."""
    return {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file() and p.name not in ("summary.csv", SNAPSHOT)}


def main(args: Optional[list[str]] = None) -> None:
    """``python -m lit_grok sweep --config SWEEP.yaml``; a bad sweep file ends with one line, not a traceback."""
    try:
        summary = CLI(sweep, args=args)
    except ReportFailed as error:  # the runs are done; the report is not
        sys.exit(f"error: {error}")
    except (ValueError, FileNotFoundError) as error:  # a bad sweep file or argument: exit status 2, as the CLI's
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    failed = failed_runs(summary)
    if failed:
        sys.exit(f"error: {_failed_line(failed)}.")
