"""A progress bar over the whole run in optimiser steps, for full batch, where Lightning's per-epoch bar restarts every batch."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar
from tqdm import tqdm


class StepProgressBar(ProgressBar):
    """Steps done of ``max_steps``, with the latest train/val accuracy and loss.

    Redraws at most every ``refresh_seconds``; only then are the metrics read (a host sync), so the
    bar costs nothing measurable on the steps between redraws.
    """

    SHOWN = {"train/acc": "train_acc", "val/acc": "val_acc", "val/loss": "val_loss",
             "sim/train_acc": "train_acc", "sim/test_acc": "test_acc", "sim/test_loss": "test_loss",
             "members/train_acc": "train_acc", "members/val_acc": "val_acc", "members/val_loss": "val_loss"}

    def __init__(self, refresh_seconds: float = 0.5) -> None:
        super().__init__()
        self.refresh_seconds = refresh_seconds
        self._enabled = True
        self._bar: Optional[tqdm] = None
        self._last = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            total = trainer.max_steps if trainer.max_steps > 0 else None
            self._bar = tqdm(total=total, initial=trainer.global_step, desc="steps", unit="step",
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now = time.monotonic()
        if self._bar is not None and now - self._last >= self.refresh_seconds:
            self._last = now
            self._redraw(trainer)

    def _redraw(self, trainer: pl.Trainer) -> None:
        assert self._bar is not None
        metrics = trainer.callback_metrics
        self._bar.set_postfix({short: f"{float(metrics[key]):.4g}" for key, short in self.SHOWN.items()
                               if key in metrics}, refresh=False)
        self._bar.update(trainer.global_step - self._bar.n)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._redraw(trainer)
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
