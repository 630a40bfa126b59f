"""One run from a config: LightningCLI with lit_grok's defaults, links and one-line errors (``GrokCLI``), used by
the command line (``lit_grok.cli``) and by sweeps (``lit_grok.sweep``)."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Optional, Union

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger

from lit_grok.branching import check_resume, read_training_checkpoint, stale_callbacks
from lit_grok.callbacks import ModelCheckpoint, StepProgressBar, StopOnDivergence, TensorBoardLayout, TrainingCurves
from lit_grok.callbacks.members import Members, per_member

# Trainer defaults for full batch (an epoch is one optimiser step): validate every 100 steps rather than every step,
# no sanity check, stop on max_steps alone, and TensorBoard under logs/<experiment>/version_N/.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": -1,
    "check_val_every_n_epoch": 100,
    "num_sanity_val_steps": 0,
    "logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "logs", "name": "lit_grok", "default_hp_metric": False},
    },
}



LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


VERBOSE = "LIT_GROK_VERBOSE"  # the command line's choice, for the processes it starts (a local Ray's workers)


def quiet_lightning(verbose: Optional[bool] = None) -> None:
    """lit_grok's own lines and Lightning's warnings; Lightning's info (hardware lines, "Seed set to", tips,
    "`Trainer.fit` stopped") only with ``verbose``. None keeps the choice the command line made (in this
    process, or in the sweep that started this Ray worker), and is quiet where none was made."""
    quiet_lightning_warnings()
    if verbose is None:
        verbose = os.environ.get(VERBOSE) == "1"
    else:
        os.environ[VERBOSE] = "1" if verbose else "0"
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # a resumed run writes into its own folder on purpose
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # said in one line by GrokCLI (stale_callbacks): a changed setting is often the point of the resume
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")


def quiet_lightning_warnings() -> None:
    """Silences Lightning warnings that are expected with full-batch epochs, manual optimisation and tensors on the device."""
    for message in (r"The number of training batches \(\d+\) is smaller than the logging interval",
                    r".*does not have many workers.*",
                    r"Total length of .* across ranks is zero",  # no held-out set: training on every pair
                    # a sweep builds each run from its own args while sys.argv holds the sweep's command line
                    r"LightningCLI's args parameter is intended to run from within Python",
                    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
                    # the step engine's checkpoints hold the state after a step, as automatic optimisation's do
                    r"Using ModelCheckpoint with manual optimization and every_n_train_steps"):
        warnings.filterwarnings("ignore", message=message)


# the lines of a jsonargparse union report that frame the reason rather than give it
NOT_A_REASON = ("Does not validate", "Errors:", "Given value", "Expected a <class 'NoneType'>",
                "Expected a path but")  # the last: a callable's class_path tried as a file path


def one_line(message: str, sections: Optional[dict[str, str]] = None) -> str:
    """jsonargparse's report of a bad value, cut to the line that says what is wrong, prefixed by its key.

    A value inside ``data`` or ``model`` fails as a "Union" of the class and None: the report nests the real
    error (ours, or "Expected a <class 'int'>") among "Expected a <class 'NoneType'>" lines and the whole
    Namespace. ``sections`` maps a class path to its config key, for errors raised when classes are built.
    """
    if "Does not validate against any of the Union subtypes" not in message:
        return message
    keys: list[tuple[int, str]] = []
    leaf, path, allowed, given, subtypes = None, [], "", "", ""
    for line in message.splitlines():
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if not text:
            continue
        keys = [(i, k) for i, k in keys if i < indent]
        if match := re.match(r'Parser key "([^"]+)":', text):
            keys.append((indent, match.group(1)))
        elif text.startswith("- Problem with given class_path"):
            keys.append((indent, "init_args"))
        elif text.startswith("Subtypes:") and leaf is None:
            subtypes = text
        elif leaf is None and (nested := re.search(r'expects a function or a callable class: Parser key "([^"]+)":?$',
                                                   text)):  # a callable's (an optimiser's) own argument failed
            keys += [(indent, "init_args"), (indent, nested.group(1))]
        elif leaf is None and not text.removeprefix("- ").startswith(NOT_A_REASON):
            leaf, path = text.removeprefix("- ").rstrip(":"), [k for _, k in keys]
            allowed = " or ".join(re.findall(r"<class '(?:[\w.]+\.)?(\w+)'>", subtypes)).replace("NoneType", "null")
        elif leaf is not None and text.startswith("Given value:") and not given:
            given = text.removeprefix("Given value:").strip().split(". Got value: ")[0]
    if leaf is None:
        return message
    if not path and (match := re.search(r"class_path='([^']+)'", message)):
        path = [(sections or {}).get(match.group(1), match.group(1))]
    if match := re.fullmatch(r"Expected a <class '(?:[\w.]+\.)?(\w+)'>\. Got value: (.*)", leaf):
        what = f"expected {match.group(1)}, got {match.group(2)!r}"
    elif re.fullmatch(r"Expected a <class '[\w.]+'>", leaf) and allowed:
        what = f"expected {allowed}, got {given!r}"
    else:
        what = leaf
    return f"{'.'.join(path)}: {what}" if path else what


class OneLineParser(LightningArgumentParser):
    """Reports a bad value as one line (``error: data.init_args.modulus: expected int or null, got 'abc'``)
    instead of the usage text and jsonargparse's nested union report."""

    sections: dict[str, str] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--trainer.max_step=100` is a typo, not `max_steps`
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):  # an inner parser, or debugging
            super().error(message, ex)
        sys.stderr.write(f"error: {one_line(message, self.sections)}{self._did_you_mean(message)}\n")
        self.exit(2)

    def _did_you_mean(self, message: str) -> str:
        """For an unknown option, the known one it is most likely a typo of."""
        match = re.match(r"unrecognized arguments: (--[\w.]+)", message)
        if not match:
            return ""
        close = difflib.get_close_matches(match.group(1), list(self._option_string_actions), n=1, cutoff=0.8)
        return f" (did you mean {close[0]}?)" if close else ""


class SaveConfigToTensorBoard(SaveConfigCallback):
    """Writes the resolved config to ``config.yaml`` in the run's folder and as text in TensorBoard (nothing for
    a run without a logger, which has no folder). A run resumed into its own folder keeps the original
    ``config.yaml`` and writes the resumed run's config beside it as ``config.resume_1.yaml`` (then ``_2``, ...)."""

    resuming = False  # set by GrokCLI when the run continues from a checkpoint

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not trainer.loggers:  # no run folder: Lightning would write config.yaml into the working directory
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        if self.resuming and log_dir and os.path.isfile(os.path.join(log_dir, self.config_filename)):
            n = 1
            while os.path.isfile(os.path.join(log_dir, f"config.resume_{n}.yaml")):
                n += 1
            self.config_filename = f"config.resume_{n}.yaml"
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        text = self.parser.dump(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("config", "".join("    " + line for line in text.splitlines(True)))


class GrokCLI(LightningCLI):
    """LightningCLI with the data's sizes linked into the model.

    Any LightningModule and DataModule can be named by ``class_path`` (``lit_grok.GrokkingModule`` with
    ``lit_grok.ModularArithmeticDataModule``, ``lit_grok.simulation.CircuitSimulation`` with its
    ``SimulationData``, ...). A link applies when the data has the attribute and the model the argument.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.n_classes", "model.init_args.n_classes", apply_on="instantiate")
        parser.link_arguments("data.n_members", "model.init_args.n_members", apply_on="instantiate")

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test: predict has no use here (a run's answers are its validation)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    @property
    def resumed_from_step(self) -> Optional[int]:
        """The step of the checkpoint given to ``--ckpt_path`` that this run continued from, if any."""
        checkpoint = getattr(self, "_checkpoint", None)
        return None if checkpoint is None else int(checkpoint["global_step"])

    def _ckpt_file(self) -> Optional[str]:
        """The file given to ``--ckpt_path``, if any (not Lightning's names "last", "best", ...)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        return path if path and path not in ("last", "best", "hpc", "registry") else None

    def _parse_ckpt_path(self) -> None:
        """A missing, truncated or foreign ``--ckpt_path`` ends in one line before Lightning reads its
        hyperparameters (where it would end in a traceback from torch.load)."""
        path = self._ckpt_file()
        if path:
            try:
                self._checkpoint = read_training_checkpoint(path, "ckpt_path")  # checked against the model later
            except ValueError as error:
                self.parser.error(str(error))
            max_steps = self.config[self.config["subcommand"]].get("trainer", {}).get("max_steps") or -1
            done = self._checkpoint["global_step"]
            if self.config["subcommand"] == "fit" and 0 < max_steps <= done:
                self.parser.error(f"ckpt_path: {path!r} is already at step {done} and "
                                  f"trainer.max_steps is {max_steps}: raise --trainer.max_steps to continue.")
        super()._parse_ckpt_path()

    def instantiate_classes(self) -> None:
        """Bad values in the config (an unknown operation, an impossible train_size, ...) end as a parser error."""
        try:
            super().instantiate_classes()
            for part in [self.model, *self.trainer.callbacks]:  # settings that depend on the data
                if hasattr(part, "check_data") and self.datamodule is not None:
                    part.check_data(self.datamodule)
            if self._ckpt_file():
                check_resume(self._checkpoint, self._ckpt_file(), self.model, self.datamodule)
                stale = stale_callbacks(self._checkpoint, self.trainer.callbacks)
                if stale:  # instead of Lightning's warning, which asks to add them back
                    print(f"resume: {self._ckpt_file()} holds the state of {', '.join(stale)}, which this config "
                          f"has not, or has with other settings: they start afresh.", flush=True)
        except ValueError as error:
            config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
            sections = {str(config.get(f"{key}.class_path")): key for key in ("model", "data")
                        if config.get(f"{key}.class_path") is not None}
            self.parser.error(one_line(str(error), sections))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Adds the one-step-epoch defaults a config left out.

        Lightning's own defaults assume long epochs: its ModelCheckpoint saves every epoch (here: every
        step) and its progress bar restarts every epoch. Unless the config lists its own, the run gets a
        ``ModelCheckpoint`` every 1000 steps plus ``last`` (also on Ctrl-C), a ``StepProgressBar`` over the
        whole run, ``TrainingCurves`` and ``StopOnDivergence``.
        """
        config = self._get(self.config_init, "trainer", default={})
        check_trainer(config)
        callbacks = list(config.get("callbacks") or [])
        for flag, kind in (("enable_checkpointing", Checkpoint), ("enable_progress_bar", ProgressBar)):
            if config.get(flag) is False:  # `--trainer.enable_progress_bar=false` works on any config
                callbacks = [c for c in callbacks if not isinstance(c, kind)]
        if config.get("enable_checkpointing") is not False and not _has(callbacks, Checkpoint):
            callbacks.append(ModelCheckpoint(every_n_train_steps=1000, save_last=True, save_on_exception=True))
        if config.get("enable_progress_bar") is not False and not _has(callbacks, ProgressBar):
            callbacks.append(StepProgressBar())
        if not _has(callbacks, TrainingCurves):
            callbacks.append(TrainingCurves())
        if not _has(callbacks, TensorBoardLayout):
            callbacks.append(TensorBoardLayout())
        if not _has(callbacks, StopOnDivergence):
            callbacks.append(StopOnDivergence())
        ckpt_path = self.config.get(str(self.subcommand), {}).get("ckpt_path") if self.subcommand else None
        if ckpt_path:
            loggers = config.get("logger")
            for logger in loggers if isinstance(loggers, list) else [loggers]:
                continue_run(logger, ckpt_path)
        n_members = getattr(self.datamodule, "n_members", None)
        if n_members is not None:  # an ensemble: the single-run callbacks go to each member
            members = next((c for c in callbacks if isinstance(c, Members)), None) or Members()
            members.share([c for c in callbacks if per_member(c)], n_members)
            callbacks = [c for c in callbacks if not per_member(c) and not isinstance(c, Members)] + [members]
        trainer = super().instantiate_trainer(**{**kwargs, "callbacks": callbacks})
        for callback in trainer.callbacks:
            if isinstance(callback, SaveConfigToTensorBoard):
                callback.resuming = bool(ckpt_path)
        return trainer


def continue_run(logger: Any, ckpt_path: str) -> None:
    """Resuming from ``<save_dir>/<name>/<version>/checkpoints/*.ckpt`` logs into that same ``<version>``
    (events appended, one run in TensorBoard) rather than a new ``version_N+1``, unless the config names a
    version itself."""
    if not isinstance(logger, TensorBoardLogger) or logger._version is not None:
        return
    checkpoint = Path(ckpt_path).resolve()
    if checkpoint.parent.name == "checkpoints" and checkpoint.parent.parent.parent == Path(logger.root_dir).resolve():
        logger._version = checkpoint.parent.parent.name


def check_trainer(config: dict[str, Any]) -> None:
    """Trainer settings that Lightning would accept and then fail on deep inside a loop (or ignore)."""
    max_steps = config.get("max_steps")
    if max_steps is not None and max_steps != -1 and max_steps < 1:
        raise ValueError(f"trainer.max_steps must be -1 (no limit) or >= 1, got {max_steps}.")
    every = config.get("check_val_every_n_epoch")
    if every is not None and every < 1:
        raise ValueError(f"trainer.check_val_every_n_epoch must be >= 1 (steps between validations), got {every}.")


def _has(callbacks: list, kind: type) -> bool:
    return any(isinstance(c, kind) for c in callbacks)


CLI_KWARGS: dict[str, Any] = dict(
    model_class=LightningModule,
    datamodule_class=LightningDataModule,
    subclass_mode_model=True,
    subclass_mode_data=True,
    seed_everything_default=0,
    trainer_defaults=TRAINER_DEFAULTS,
    save_config_callback=SaveConfigToTensorBoard,
    parser_class=OneLineParser,
    save_config_kwargs={"overwrite": True},
    auto_configure_optimizers=False,
    parser_kwargs={"description": "lit_grok: grokking through circuit efficiency. Subcommands train, validate "
                                  "or test one run; `python -m lit_grok sweep --config SWEEP.yaml` runs a sweep."},
)


class _ParseOnly(GrokCLI):
    def instantiate_classes(self) -> None:
        pass


def snapshot_config(config: str, path: Path) -> str:
    """Writes the config file ``config`` resolved (every value, no file references) to ``path`` and returns
    ``path``: a sweep's runs read that, so that editing the YAML while the sweep runs changes nothing."""
    cli = _ParseOnly(args=["-c", config], run=False, **CLI_KWARGS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {config} as the sweep read it when it started\n" + cli.parser.dump(cli.config, skip_none=False))
    return str(path)


def parse_config(args: list[str]) -> dict[str, Any]:
    """The config a command line (without subcommand) describes, as a dict, with nothing instantiated."""
    return _ParseOnly(args=args, run=False, **CLI_KWARGS).config.as_dict()


def build(args: Optional[Union[list[str], dict[str, Any]]] = None, run: bool = True) -> GrokCLI:
    """The CLI for ``args`` (and the fit it runs when ``run``); errors propagate, for callers such as sweeps."""
    return GrokCLI(args=args, run=run, **CLI_KWARGS)
