"""Divergence: a run whose loss or parameters become non-finite stops at once, with one line, and its last good
checkpoint is never overwritten by non-finite weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lit_grok.loops import save_intervals

WATCHED = ("train/loss", "norm/params", "val/loss")


class Diverged(RuntimeError):
    """A run's loss or parameters became non-finite; the message says where and what to try."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def last_checkpoint(trainer: pl.Trainer) -> Optional[str]:
    """The newest checkpoint file the run's ModelCheckpoints have written, if any."""
    paths = [Path(p) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)
             for p in (c.last_model_path, c.best_model_path) if p]
    paths = [p for p in paths if p.is_file()]
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None


class StopOnDivergence(pl.Callback):
    """Checks the training loss and the parameter norm at every validation (already measured: no extra host
    sync between validations) and, before any checkpoint is written between validations, that every
    parameter is finite (one sync per checkpoint). A single run then raises ``Diverged`` (the CLI prints its
    message and exits with status 1; a sweep records the run as diverged); an ensemble member stops and is
    frozen while the others go on. Checkpoints are not written after the divergence, so the last one on
    disk holds finite weights. The CLI adds it to every run.
    """

    # an ensemble member is checked at validations only: the weights checked before a checkpoint are the
    # ensemble's, and a member never raises
    member_hooks_unused = ("on_train_batch_end", "on_exception")

    def __init__(self) -> None:
        self.diverged_step: Optional[int] = None
        self.what: str = ""

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row."""
        return {"diverged": self.diverged_step is not None,
                "events/diverged_step": -1 if self.diverged_step is None else self.diverged_step}

    def _stop(self, trainer: pl.Trainer, step: int, what: str) -> None:
        self.diverged_step, self.what = step, what
        trainer.should_stop = True
        if not getattr(trainer, "is_member", False):  # a member is frozen by Members; a run ends here
            saved = last_checkpoint(trainer)
            kept = f"; {saved} holds the last finite weights" if saved else ""
            raise Diverged(f"training diverged at step {step}: {what}. Try a lower learning rate "
                           f"(model.init_args.optimizer.init_args.lr) or a float64 loss (loss_dtype){kept}.", step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.diverged_step is not None:
            return
        bad = [f"{name} is {float(trainer.callback_metrics[name])}" for name in WATCHED
               if name in trainer.callback_metrics and not math.isfinite(float(trainer.callback_metrics[name]))]
        if bad:
            self._stop(trainer, trainer.global_step, ", ".join(bad))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        saving = any(step % every == 0 for every in save_intervals(trainer))
        if saving and self.diverged_step is None:
            finite = torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all()
            if not bool(finite):
                self._stop(trainer, step, "a parameter is not finite")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, Diverged):  # the weights are not finite: keep the last checkpoint on disk
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    callback.save_on_exception = False

    def state_dict(self) -> dict[str, Any]:
        return {"diverged_step": self.diverged_step, "what": self.what}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.diverged_step, self.what = state_dict["diverged_step"], state_dict["what"]
