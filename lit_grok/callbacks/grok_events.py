"""Grok events: when the training set is memorised, when validation generalises, and the delay between."""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from lit_grok.loops import logging_step

EVENTS = ("events/memorised_step", "events/grokked_step", "events/grok_delay")


class GrokEvents(pl.Callback):
    """Records, once each, the first validation at which ``train/acc`` and ``val/acc`` reach ``threshold``.

    The steps (optimiser steps taken when measured) and their difference are logged as scalars and
    declared as TensorBoard hparam metrics, so the HPARAMS tab compares runs; -1 means "not yet".
    With ``stop_after`` set, the run stops that many steps after grokking. The events are part of the
    checkpoint, so a resumed run neither forgets nor re-detects them.

    Args:
        threshold: accuracy that counts as memorised (train) or grokked (validation).
        stop_after: stop this many steps after grokking; None runs to ``max_steps``.
    """

    def __init__(self, threshold: float = 0.99, stop_after: Optional[int] = None) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")
        if stop_after is not None and stop_after < 0:
            raise ValueError(f"stop_after must be >= 0 or null, got {stop_after}.")
        self.threshold, self.stop_after = threshold, stop_after
        self.memorised_step: Optional[int] = None
        self.grokked_step: Optional[int] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(threshold=self.threshold, stop_after=self.stop_after)

    @property
    def delay(self) -> Optional[int]:
        if self.memorised_step is None or self.grokked_step is None:
            return None
        return self.grokked_step - self.memorised_step

    def summary(self) -> dict[str, int]:
        """The three events as metric names -> step (-1: not reached)."""
        values = (self.memorised_step, self.grokked_step, self.delay)
        return {name: -1 if v is None else v for name, v in zip(EVENTS, values)}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        params = {**pl_module.hparams, **(data.hparams if data is not None else {})}  # the HPARAMS tab's columns
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, self.summary())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        step = trainer.global_step
        changed = False
        if self.memorised_step is None and float(metrics.get("train/acc", 0.0)) >= self.threshold:
            self.memorised_step, changed = step, True
        if self.grokked_step is None and float(metrics.get("val/acc", 0.0)) >= self.threshold:
            self.grokked_step, changed = step, True
        if changed:  # beside the validation metrics that triggered them (Lightning logs those at step - 1)
            for logger in trainer.loggers:
                logger.log_metrics({k: float(v) for k, v in self.summary().items()}, step=logging_step(trainer))
        if self.stop_after is not None and self.grokked_step is not None:
            if step >= self.grokked_step + self.stop_after:
                trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"memorised_step": self.memorised_step, "grokked_step": self.grokked_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memorised_step, self.grokked_step = state_dict["memorised_step"], state_dict["grokked_step"]
