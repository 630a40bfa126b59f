"""Stops a run once its monitored metrics have stopped moving (training to convergence without a guessed step count)."""

from __future__ import annotations

import math
from typing import Any, Optional

import pytorch_lightning as pl

from lit_grok.loops import logging_step


class StopOnConvergence(pl.Callback):
    """Stops when, over the last ``window`` validations, every monitored metric changed by less than
    ``rel_tol`` relative to its current value (max minus min over the window, divided by the latest value),
    or, for the metrics named in ``abs_tol``, by less than that absolute amount.

    The default monitors the training loss and the parameter norm, which settle together once weight
    decay and cross-entropy balance. An accuracy near 0 needs an absolute tolerance (``abs_tol:
    {val/acc: 0.005}``): relative to a value near 0, one pair's change would count as movement. ``trainer.max_steps`` stays the upper bound; ``converged`` (and the
    logged ``events/converged_step``) say whether the run stopped for this reason.

    Args:
        monitor: metric names, as logged.
        rel_tol: relative change below which a metric counts as converged.
        window: number of consecutive validations compared.
        abs_tol: metric name -> absolute tolerance, used for that metric instead of ``rel_tol``.
        min_steps: never stop before this many optimiser steps (e.g. while a branch's accuracy has not
            started to fall yet).
    """

    def __init__(self, monitor: tuple[str, ...] = ("train/loss", "norm/params"), rel_tol: float = 1e-3,
                 window: int = 10, abs_tol: Optional[dict[str, float]] = None, min_steps: int = 0) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}.")
        if rel_tol <= 0:
            raise ValueError(f"rel_tol must be > 0, got {rel_tol}.")
        abs_tol = dict(abs_tol or {})
        if not set(abs_tol) <= set(monitor):
            raise ValueError(f"abs_tol names {sorted(set(abs_tol) - set(monitor))}, which are not monitored "
                             f"(monitor: {list(monitor)}).")
        if any(not tol > 0 for tol in abs_tol.values()):
            raise ValueError(f"abs_tol values must be > 0, got {abs_tol}.")
        if min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {min_steps}.")
        self.monitor, self.rel_tol, self.window, self.abs_tol = tuple(monitor), rel_tol, window, abs_tol
        self.min_steps = min_steps
        self.history: list[list[float]] = []
        self.converged_step: int = -1

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, rel_tol=self.rel_tol, window=self.window,
                                        abs_tol=sorted(self.abs_tol.items()), min_steps=self.min_steps)

    @property
    def converged(self) -> bool:
        return self.converged_step >= 0

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row."""
        return {"converged": self.converged, "events/converged_step": self.converged_step}

    def settled(self, history: list[list[float]]) -> bool:
        """The rule, on a window of validations (each the monitored metrics' values, oldest first): every
        metric's spread within its tolerance."""
        for name, values in zip(self.monitor, zip(*history)):
            spread, latest = max(values) - min(values), abs(values[-1])
            tolerance = self.abs_tol.get(name, self.rel_tol * max(latest, 1e-12))
            if not math.isfinite(spread) or spread > tolerance:
                return False
        return True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.converged:
            return
        metrics = trainer.callback_metrics
        missing = [m for m in self.monitor if m not in metrics]
        if missing:
            raise KeyError(f"StopOnConvergence monitors {missing}, which were not logged; logged: {sorted(metrics)}.")
        self.history = (self.history + [[float(metrics[m]) for m in self.monitor]])[-self.window:]
        if len(self.history) < self.window or trainer.global_step < self.min_steps:
            return
        if not self.settled(self.history):
            return
        self.converged_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({"events/converged_step": float(trainer.global_step)}, step=logging_step(trainer))
        trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "converged_step": self.converged_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.converged_step = state_dict["history"], state_dict["converged_step"]
