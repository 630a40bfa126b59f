"""Single-run callbacks on an ensemble: each member gets its own callbacks, metrics and TensorBoard run."""

from __future__ import annotations

import copy
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelSummary, ProgressBar
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from lit_grok.callbacks.dataset_swap import DatasetSwap
from lit_grok.callbacks.run_result import RunResult
from lit_grok.loops import logging_step


MEMBER_HOOKS = ("on_fit_start", "on_train_start", "on_train_epoch_end", "on_validation_epoch_end",
                "on_validation_end", "on_fit_end")  # what a member's callback is called with, and nothing else
_HOOKS = tuple(name for name in vars(pl.Callback) if name.startswith("on_") or name in ("setup", "teardown"))


def unsupported_hooks(callback: pl.Callback) -> list[str]:
    """The hooks a callback implements that ensemble members never call (so it would half-work on a member),
    less those its class declares it can do without on a member (``member_hooks_unused``)."""
    unused = set(getattr(callback, "member_hooks_unused", ()))
    return [name for name in _HOOKS if name not in MEMBER_HOOKS and name not in unused
            and getattr(type(callback), name) is not getattr(pl.Callback, name)]


def check_member_callback(callback: pl.Callback) -> None:
    """Refuses, in one line, a callback that ensemble members cannot run as it expects."""
    missing = unsupported_hooks(callback)
    if missing:
        raise ValueError(f"{type(callback).__name__} cannot watch an ensemble member: it implements "
                         f"{', '.join(missing)}, which members never call (they get {', '.join(MEMBER_HOOKS)}); use it "
                         f"in single runs, or list the hooks it can do without in its class's member_hooks_unused.")


def per_member(callback: pl.Callback) -> bool:
    """Whether a callback watches one run (lit_grok's GrokEvents, CircuitEfficiency, DatasetSwap, ..., and any
    user callback), so that each ensemble member gets its own copy; the Trainer's own (checkpoints, progress
    bars, model summary, config saving) stay with the ensemble."""
    return not isinstance(callback, (Checkpoint, ProgressBar, ModelSummary, SaveConfigCallback, Members, RunResult))


class MemberTrainer:
    """What a single-run callback sees of the Trainer when it watches member k: the member's metrics, data,
    loggers and folder, and its own ``should_stop``; anything else (``global_step``, ``fit_loop``, ...) is
    the ensemble Trainer's."""

    is_member = True  # a callback that would end a run (StopOnDivergence) stops the member instead

    def __init__(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule, loggers: list,
                 log_dir: Optional[str]) -> None:
        self._trainer = trainer
        self.datamodule, self.loggers, self.log_dir = datamodule, loggers, log_dir
        self.callback_metrics: dict[str, Tensor] = {}
        self.should_stop = False

    @property
    def logger(self) -> Optional[Any]:
        return self.loggers[0] if self.loggers else None

    @property
    def optimizers(self) -> list:
        raise RuntimeError("a member's callback cannot reach the optimiser: the ensemble shares one.")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)


class MemberModule:
    """What a single-run callback sees of the LightningModule for member k: its hyperparameters, ``net`` (a
    standalone copy of the member, built when first asked for), ``forward`` and ``log`` (into its metrics)."""

    def __init__(self, ensemble: pl.LightningModule, k: int, metrics: dict[str, Tensor],
                 nets: dict[int, torch.nn.Module]) -> None:
        self.ensemble, self.k, self.metrics, self._nets = ensemble, k, metrics, nets
        self.hparams = ensemble.member_hparams[k]
        self._current = False

    @property
    def net(self) -> torch.nn.Module:
        """Member k's network as it is now: built once per fit, refreshed on the device when first asked."""
        # outside inference mode even when first asked during validation: inference tensors could not be
        # refreshed later (on train epoch end, on fit end)
        with torch.inference_mode(False), torch.no_grad():
            if self.k not in self._nets:
                self._nets[self.k] = self.ensemble.member_net(self.k).eval()
            elif not self._current:
                self._nets[self.k].load_state_dict(self.ensemble.net.member_state_dict(self.k))
        self._current = True
        return self._nets[self.k]

    @property
    def device(self) -> torch.device:
        return self.ensemble.device

    def decay_rate(self) -> float:
        """Member k's lr x weight decay per optimiser step (ensembles have no warm-up)."""
        return float(self.ensemble.lr[self.k] * self.ensemble.weight_decay[self.k])

    def __call__(self, tokens: Tensor) -> Tensor:
        return self.net(tokens)

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        self.metrics[name] = torch.as_tensor(value).detach().cpu()


class Members(pl.Callback):
    """Runs single-run callbacks on each member of an ``EnsembleModule`` and logs each member as its own
    TensorBoard run, under the single-run metric names, so TensorBoard's run selector compares members.

    A member's callbacks are called with the hooks in ``MEMBER_HOOKS`` only, and a callback that implements
    any other (a batch hook, ``setup``, ...) is refused in one line unless its class lists it in
    ``member_hooks_unused``. They see the member's own metrics, data and run folder (``MemberTrainer``, ``MemberModule``):
    grok events, efficiency, plateaus and a ``DatasetSwap`` to the member's own D' work as in a single run.
    A member whose callbacks stop it (``GrokEvents.stop_after``, ``StopOnConvergence``) stops training: its
    learning rate becomes 0 and it is no longer validated; the run stops when every member has.
    The CLI adds this callback to every ensemble run and gives each member a copy of each of the config's
    ``trainer.callbacks`` that watch a run (``per_member``).

    Args:
        callbacks: member k's own callbacks (the k-th list), beside the copies the CLI adds.
        log_dirs: member k's run folder; default ``<trainer.log_dir>/member_<k>`` (none without a logger).
    """

    def __init__(self, callbacks: Optional[list[list[pl.Callback]]] = None,
                 log_dirs: Optional[list[str]] = None) -> None:
        self.callbacks = callbacks
        self.log_dirs = log_dirs
        self.views: list[MemberTrainer] = []
        self.stopped_steps: list[Optional[int]] = []
        self._nets: dict[int, torch.nn.Module] = {}  # standalone copies of the members, for callbacks
        self._saved_metrics: list[dict[str, float]] = []  # from a checkpoint, until the views exist

    def share(self, callbacks: list[pl.Callback], n_members: int) -> None:
        """Gives every member its own copy of each of ``callbacks``."""
        for callback in callbacks:
            check_member_callback(callback)
        own = self.callbacks or [[] for _ in range(n_members)]
        self.callbacks = [list(mine) + [copy.deepcopy(c) for c in callbacks] for mine in own]

    def check_data(self, datamodule: Any) -> None:
        """Called by the CLI once the config is built: each member's callbacks check the member's data."""
        for mine, data in zip(self.callbacks or [], datamodule.members):
            for callback in mine:
                if hasattr(callback, "check_data"):
                    callback.check_data(data)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "member_metrics"):
            raise ValueError(f"Members needs an EnsembleModule, got {type(pl_module).__name__}.")
        k = pl_module.hparams.n_members
        self.callbacks = self.callbacks or [[] for _ in range(k)]
        for name, values in (("callbacks", self.callbacks), ("log_dirs", self.log_dirs)):
            if values is not None and len(values) != k:
                raise ValueError(f"Members has {len(values)} {name} for {k} members.")
        for mine in self.callbacks:
            for callback in mine:
                check_member_callback(callback)
                if isinstance(callback, DatasetSwap) and callback.reset_optimizer:
                    raise ValueError("DatasetSwap(reset_optimizer=True) is not supported in ensembles: the members "
                                     "share one optimiser state.")
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank asks
        if self.views:
            return
        dirs = self.log_dirs or ([f"{log_dir}/member_{i}" for i in range(k)] if trainer.loggers else [None] * k)
        data = trainer.datamodule.members
        self.views = [MemberTrainer(trainer, data[i], [] if d is None else
                                    [TensorBoardLogger(d, name="", version="", default_hp_metric=False)], d)
                      for i, d in enumerate(dirs)]
        if len(self.stopped_steps) != k:
            self.stopped_steps = [None] * k
        self._restore_metrics()

    def _call(self, hook: str, trainer: pl.Trainer, pl_module: pl.LightningModule, running_only: bool = True) -> None:
        for k, view in enumerate(self.views):
            if running_only and self.stopped_steps[k] is not None:
                continue
            member = MemberModule(pl_module, k, view.callback_metrics, self._nets)
            for callback in self.callbacks[k]:
                getattr(callback, hook)(view, member)

    def event_steps(self) -> list[int]:
        """The steps at which members' callbacks act between validations (the step engine ends a batch there)."""
        return [s for callbacks in self.callbacks for c in callbacks for s in getattr(c, "event_steps", tuple)()]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call("on_fit_start", trainer, pl_module, running_only=False)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call("on_train_start", trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call("on_train_epoch_end", trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the module has measured every member: each running member's callbacks see its metrics, log
        theirs beside them, and may stop it; then its metrics go to its run."""
        if trainer.sanity_checking:
            return
        step = logging_step(trainer)  # where Lightning puts a single run's metrics of this validation
        for k, view in enumerate(self.views):
            if self.stopped_steps[k] is None:  # a member with no held-out pairs has no val/* (as a single run)
                held_out = len(view.datamodule.val_indices) > 0
                view.callback_metrics = {name: values[k] for name, values in pl_module.member_metrics.items()
                                         if held_out or not name.startswith("val/")}
        self._call("on_validation_epoch_end", trainer, pl_module)
        self._call("on_validation_end", trainer, pl_module)
        for k, view in enumerate(self.views):
            if self.stopped_steps[k] is not None:
                continue
            for logger in view.loggers:
                logger.log_metrics({name: float(v) for name, v in view.callback_metrics.items()}, step)
            if view.should_stop:
                self.stopped_steps[k] = trainer.global_step
                pl_module.freeze_member(k)
        if all(step is not None for step in self.stopped_steps):
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._call("on_fit_end", trainer, pl_module, running_only=False)
        for view in self.views:
            for logger in view.loggers:
                logger.finalize("success")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        for view in self.views:
            for logger in view.loggers:
                logger.finalize("failed")

    def results(self, trainer: pl.Trainer) -> list[tuple[dict[str, float], int]]:
        """Per member, its final metrics (sorted by name) and the step it stopped at."""
        return [({name: float(v) for name, v in sorted(view.callback_metrics.items())},
                 trainer.global_step if stopped is None else stopped)
                for view, stopped in zip(self.views, self.stopped_steps)]

    def state_dict(self) -> dict[str, Any]:
        # a stopped member is never measured again: its last metrics are its result, so they are saved
        return {"stopped_steps": self.stopped_steps,  # callback states keyed as Lightning keys a run's own
                "callbacks": [{c.state_key: c.state_dict() for c in mine} for mine in self.callbacks or []],
                "metrics": [{name: float(v) for name, v in view.callback_metrics.items()} for view in self.views]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped_steps = state_dict["stopped_steps"]
        for k, (mine, states) in enumerate(zip(self.callbacks or [], state_dict["callbacks"])):
            if isinstance(states, list):  # checkpoints written before states were keyed: by position
                states = {c.state_key: state for c, state in zip(mine, states)}
            for callback in mine:
                if callback.state_key in states:
                    callback.load_state_dict(states[callback.state_key])
            unmatched = sorted(set(states) - {c.state_key for c in mine})
            if unmatched:  # as Lightning does for a run's own callbacks: said, not fatal
                rank_zero_warn(f"the checkpoint holds member {k}'s state for callbacks this run does not have: "
                               f"{unmatched}; it is ignored.")
        self._saved_metrics = state_dict.get("metrics", [])
        self._restore_metrics()

    def _restore_metrics(self) -> None:
        """Puts the checkpoint's member metrics back into the views (built in setup, before or after loading)."""
        for view, metrics in zip(self.views, self._saved_metrics):
            view.callback_metrics = {name: torch.tensor(value) for name, value in metrics.items()}
