"""The command line: ``python -m lit_grok fit|validate|test --config CONFIG.yaml`` runs one run,
``python -m lit_grok sweep --config SWEEP.yaml`` a sweep (the installed ``lit-grok`` command is the same)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from lit_grok import sweep
from lit_grok.callbacks import Diverged
from lit_grok.callbacks.run_result import run_record, summary_lines
from lit_grok.runs import GrokCLI, build, quiet_lightning

USAGE = """usage: python -m lit_grok COMMAND --config FILE.yaml [--key=value ...]   (or: lit-grok COMMAND ...)

lit_grok: grokking through circuit efficiency (Varma et al. 2023).

commands:
  fit        train one run from a run file (configs/cpu/grok.yaml, ...)
  validate   evaluate a run's checkpoint (--ckpt_path) on its held-out and training pairs
  test       the same, logged as test/*
  sweep      run every combination of a sweep file's grids (configs/cpu/efficiency.yaml, ...)

options:
  --verbose  show Lightning's own messages (hardware, seeds, tips) as well as lit_grok's
  -h, --help this text; `python -m lit_grok COMMAND --help` lists a command's options
"""

RUN_COMMANDS = ("fit", "validate", "test")


def _config_files(argv: list[str]) -> list[str]:
    """The files given with -c/--config on a command line."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def file_kind(path: str) -> Optional[str]:
    """"sweep" for a sweep file (grids on a base config), "run" for a run file, None if unreadable or neither."""
    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(content, dict):
        return None
    if "grids" in content or "base" in content:
        return "sweep"
    if {"trainer", "model", "data"} & set(content):
        return "run"
    return None


def check_file_kinds(command: str, argv: list[str]) -> None:
    """A sweep file given to ``fit`` (or a run file to ``sweep``) ends in one line naming the right command."""
    for path in _config_files(argv):
        kind = file_kind(path)
        if command in RUN_COMMANDS and kind == "sweep":
            sys.stderr.write(f"error: {path} is a sweep file (it has grids): run it with "
                             f"`python -m lit_grok sweep --config {path}`.\n")
            sys.exit(2)
        if command == "sweep" and kind == "run":
            sys.stderr.write(f"error: {path} is a run file (trainer/model/data, no grids): run it with "
                             f"`python -m lit_grok fit --config {path}`.\n")
            sys.exit(2)


def finish(cli: GrokCLI, seconds: float) -> None:
    """After a fit: the run's result.json (the same facts a sweep records: ``seconds`` from the command's start,
    and for a run resumed with --ckpt_path the step they count from) and two or three lines saying what
    happened and where the run is."""
    trainer = cli.trainer
    record = run_record(trainer)
    resumed = cli.resumed_from_step
    record = {**record, "seconds": round(seconds, 2), **({} if resumed is None else {"resumed_from_step": resumed})}
    log_dir = trainer.log_dir if trainer.logger is not None else None
    if log_dir and trainer.is_global_zero:
        (Path(log_dir) / "result.json").write_text(json.dumps(record, indent=1))
    if trainer.is_global_zero:
        print("\n".join(summary_lines(record, log_dir, trainer.max_steps)), flush=True)


def main(args: Optional[Union[list[str], dict[str, Any]]] = None, run: bool = True) -> GrokCLI:
    """Entry point of ``python -m lit_grok`` and the ``lit-grok`` script; ``args``/``run`` serve tests.

    ``sweep`` as the first argument runs a sweep (``lit_grok.sweep``) instead of a Trainer subcommand.
    """
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list):
        verbose = "--verbose" in argv
        argv = [a for a in argv if a != "--verbose"]
        quiet_lightning(verbose)
        if argv[:1] in ([], ["-h"], ["--help"]):
            print(USAGE)
            sys.exit(0 if argv else 2)
        check_file_kinds(argv[0], argv[1:])
        if argv[:1] == ["sweep"]:
            sweep.main(argv[1:])
            return None  # type: ignore[return-value]
    else:
        quiet_lightning()
    start = time.monotonic()
    try:
        cli = build(argv, run)
    except Diverged as error:  # one line and a non-zero exit, not a traceback
        sys.exit(f"error: {error}")
    if run and cli.subcommand == "fit":
        finish(cli, time.monotonic() - start)
    return cli
