"""Training a sweep's groups: a run alone (in this process, or as a process of its own when its Trainer
starts processes, as DDP does) or compatible runs together as one ensemble, each run's result returned as a
record. ``lit_grok.sweep`` calls ``run_group`` in its own process or, with ``--workers``, in Ray workers
(``lit_grok.distributed``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl

from lit_grok.branching import read_training_checkpoint
from lit_grok.callbacks import Diverged, ModelCheckpoint
from lit_grok.callbacks.members import Members, per_member
from lit_grok.callbacks.run_result import summaries
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule
from lit_grok.runs import build, parse_config, quiet_lightning

Group = list[tuple[int, dict[str, Any], Path]]  # (position in the sweep, grid parameters, run folder)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_id(params: dict[str, Any]) -> str:
    """A readable folder name: the last component of each key with its value, e.g. ``train_size=200-seed=1``."""
    return "-".join(f"{key.split('.')[-1]}={_text(value).replace('/', '_')}" for key, value in params.items())


def run_args(base: str, overrides: dict[str, Any], log_dir: Path) -> list[str]:
    """One run's command line (after ``fit``)."""
    return ["-c", base, *[f"--{k}={_text(v)}" for k, v in overrides.items()],
            f"--trainer.logger.init_args.save_dir={log_dir.parent.parent}",
            f"--trainer.logger.init_args.name={log_dir.parent.name}",
            "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]


def run_checkpoint(log_dir: Path) -> Path:
    """The checkpoint an interrupted run resumes from."""
    return log_dir / "checkpoints" / "last.ckpt"


def checkpoint_step(path: Path) -> int:
    """The optimiser step a Lightning checkpoint was saved at (memory-mapped: its tensors are not read, as
    Lightning reads them again when it resumes). Read without running code: a file dropped into a shared
    sweep folder that holds anything but tensors and plain values is refused in one line."""
    return int(read_training_checkpoint(str(path), "resume")["global_step"])


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


class ConfigRefused(ValueError):
    """A run's command line refused its config (the parser's one line, without its exit)."""


class _LastError(io.TextIOBase):
    """Passes writes on to ``stream`` and keeps the last line that starts with ``error: ``."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> int:
        self.last = next((line for line in reversed(text.splitlines()) if line.startswith("error: ")), self.last)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class Interrupted(SystemExit):
    """A run stopped by Ctrl-C or SIGTERM: the sweep stops with it (its exit status 1, one line) rather than
    recording the run as failed and going on to the next."""


INTERRUPTED = ("error: interrupted (Ctrl-C or SIGTERM). Run the sweep again to go on: finished runs are "
               "skipped, an interrupted one resumes from its checkpoints/last.ckpt if it wrote one.")


@contextlib.contextmanager
def exits_as_errors() -> Iterator[None]:
    """Turns a run's SystemExit into an error the sweep acts on: the CLI's exit on a bad config (its one line
    on stderr, then status 2) into ``ConfigRefused`` carrying that line, so that the sweep records why the run
    could not start and goes on; Lightning's exit on Ctrl-C (status 1) or SIGTERM (no status) into
    ``Interrupted``, which stops the sweep."""
    tee = _LastError(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee):
            yield
    except SystemExit as exit:
        if exit.code != 2:
            raise Interrupted(INTERRUPTED) from None
        raise ConfigRefused(tee.last.removeprefix("error: ") or "its config was refused (exit status 2)") from None
    except KeyboardInterrupt:  # a Ctrl-C while the config is parsed, before Lightning handles it
        raise Interrupted(INTERRUPTED) from None


def execute(base: str, overrides: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Runs one fit and returns its final metrics, events and step; a run that diverges is recorded as such
    (``diverged``, ``error``) and the sweep goes on. A run that starts processes of its own (DDP) is launched
    as ``python -m lit_grok fit ...`` with its own command line; any other runs in this process. A run
    interrupted earlier (its ``checkpoints/last.ckpt`` is there) resumes from that checkpoint."""
    start = time.monotonic()
    args = run_args(base, overrides, log_dir)
    last = run_checkpoint(log_dir)
    resume = [f"--ckpt_path={last}"] if last.is_file() else []  # an option of `fit`, not of the config
    # seconds count from here: a resumed run says from which step, so that its time is not read as the whole run's
    resumed = {"resumed_from_step": checkpoint_step(last)} if resume else {}
    with exits_as_errors():
        trainer_config = parse_config(args).get("trainer") or {}
    if launches_processes(trainer_config):
        metrics, step, extra = _execute_in_own_process(args + resume, log_dir)
    else:
        try:
            with exits_as_errors():
                cli = _cli(args + resume, run=True)
        except Diverged as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            metrics, step = {}, error.step
            extra = {"diverged": True, "events/diverged_step": error.step, "error": str(error)}
        else:
            metrics = {k: float(v) for k, v in sorted(cli.trainer.callback_metrics.items())}
            step, extra = cli.trainer.global_step, summaries(cli.trainer.callbacks)
    # the same columns in the same order as an ensemble's runs (execute_group)
    return {**metrics, "step": step, "seconds": round(time.monotonic() - start, 2), **resumed, **extra}


def _execute_in_own_process(args: list[str], log_dir: Path) -> tuple[dict[str, float], int, dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "run_result.json"
    command = [sys.executable, "-m", "lit_grok", "fit", *args, "--trainer.callbacks+=lit_grok.callbacks.RunResult",
               f"--trainer.callbacks.path={path}"]
    try:
        process = subprocess.run(command)
    except KeyboardInterrupt:  # the run's processes had Ctrl-C too
        raise Interrupted(INTERRUPTED) from None
    if not path.is_file():
        raise RuntimeError(f"the run's process ({' '.join(command)}) exited with status {process.returncode} "
                           f"and no result.")
    result = json.loads(path.read_text())
    path.unlink()
    return result["metrics"], result["step"], result["summaries"]


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
    with exits_as_errors():
        clis = [_cli(run_args(base, o, d), run=False) for o, d in zip(overrides, log_dirs)]
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
    resumed = {"resumed_from_step": checkpoint_step(last)} if last.exists() else {}
    try:
        trainer.fit(model, data, ckpt_path=str(last) if resumed else None)
    except SystemExit:  # Lightning's end of a fit stopped by Ctrl-C or SIGTERM
        raise Interrupted(INTERRUPTED) from None
    shutil.rmtree(folder, ignore_errors=True)
    seconds = round((time.monotonic() - start) / len(clis), 2)
    return [{**metrics, "step": step, "seconds": seconds, **resumed, **summaries(mine)}
            for (metrics, step), mine in zip(members.results(trainer), members.callbacks)]


def run_group(base: str, overrides: dict[str, Any], group: Group) -> list[dict[str, Any]]:
    """Trains one group (an ensemble, or a run alone) wherever it is called (this process or a Ray worker)
    and returns each run's record: its id, parameters and result. An error while training is recorded as
    the group's runs' failure (``failed``, ``error``) rather than raised, so that the sweep goes on; such
    runs are trained again when the sweep is run again, from their checkpoint where they have one."""
    quiet_lightning()  # also in a Ray worker, which did not run the command line's setup
    resumed = len(group) > 1 and (group_checkpoints([d for _, _, d in group]) / "last.ckpt").exists()
    for _, _, log_dir in group:
        if not resumed and not run_checkpoint(log_dir).is_file():
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
            except Exception as error:  # noqa: BLE001
                results.append(_failure([i], error))
    return _records(group, results, together)


def _failure(positions: list[int], error: BaseException) -> dict[str, Any]:
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    print(f"error: run{'s' if len(positions) > 1 else ''} {', '.join(map(str, positions))} failed: {message}",
          file=sys.stderr, flush=True)
    return {"failed": True, "error": message}


def lost_records(call: tuple, message: str) -> list[dict[str, Any]]:
    """The records of a group whose Ray worker kept dying."""
    group = call[2]
    return _records(group, [{"failed": True, "error": message} for _ in group], False)


def _records(group: Group, results: list[dict[str, Any]], together: bool) -> list[dict[str, Any]]:
    return [{"position": i, "log_dir": str(d), "together": together and len(group),
             "record": {"run": d.parent.name, **p, **r}} for (i, p, d), r in zip(group, results)]
