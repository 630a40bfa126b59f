"""Stops a run once its monitored metrics have stopped moving (training to convergence without a guessed step count)."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


class StopOnConvergence(pl.Callback):
    """Stops when, over the last ``window`` validations, every monitored metric changed by less than
    ``rel_tol`` relative to its current value (max minus min over the window, divided by the latest value).

    The default monitors the training loss and the parameter norm, which settle together once weight
    decay and cross-entropy balance. ``trainer.max_steps`` stays the upper bound; ``converged`` (and the
    logged ``events/converged_step``) say whether the run stopped for this reason.

    Args:
        monitor: metric names, as logged.
        rel_tol: relative change below which a metric counts as converged.
        window: number of consecutive validations compared.
    """

    def __init__(self, monitor: tuple[str, ...] = ("train/loss", "norm/params"), rel_tol: float = 1e-3,
                 window: int = 10) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}.")
        if rel_tol <= 0:
            raise ValueError(f"rel_tol must be > 0, got {rel_tol}.")
        self.monitor, self.rel_tol, self.window = tuple(monitor), rel_tol, window
        self.history: list[list[float]] = []
        self.converged_step: int = -1

    @property
    def converged(self) -> bool:
        return self.converged_step >= 0

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row."""
        return {"converged": self.converged, "events/converged_step": self.converged_step}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.converged:
            return
        metrics = trainer.callback_metrics
        missing = [m for m in self.monitor if m not in metrics]
        if missing:
            raise KeyError(f"StopOnConvergence monitors {missing}, which were not logged; logged: {sorted(metrics)}.")
        self.history = (self.history + [[float(metrics[m]) for m in self.monitor]])[-self.window:]
        if len(self.history) < self.window:
            return
        for values in zip(*self.history):
            spread, latest = max(values) - min(values), abs(values[-1])
            if not math.isfinite(spread) or spread > self.rel_tol * max(latest, 1e-12):
                return
        self.converged_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({"events/converged_step": float(trainer.global_step)}, step=trainer.global_step)
        trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "converged_step": self.converged_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.converged_step = state_dict["history"], state_dict["converged_step"]
