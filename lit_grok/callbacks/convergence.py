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
    decay and cross-entropy balance. With ``window_time`` the window is measured in *decay time*, lr x weight
    decay x optimiser steps, instead of validations: weight decay moves norm between circuits at a rate
    proportional to lr x weight decay, so one rule then asks the same of a run at weight decay 2 as of one at 8
    (which covers the same decay time in a quarter of the steps). With ``smooth: k`` the spread is that of the
    metric's running mean over k validations, each mean ending at one validation of the window (the k - 1
    before the window count towards the first ones): a value that flickers or cycles around a level by more
    than the tolerance (held-out accuracy near the decision boundary, slingshot cycles of the norm and loss)
    then counts as settled when k spans its cycles, while a drift moves the running mean as much as the raw
    value over the whole window and still shows. An accuracy near 0 needs an absolute
    tolerance (``abs_tol: {val/acc: 0.005}``): relative to a value near 0, one pair's change would count as movement. ``trainer.max_steps`` stays the upper bound; ``converged`` (and the
    logged ``events/converged_step``) say whether the run stopped for this reason.

    Args:
        monitor: metric names, as logged.
        rel_tol: relative change below which a metric counts as converged.
        window: number of consecutive validations compared (default 10; not with ``window_time``).
        abs_tol: metric name -> absolute tolerance, used for that metric instead of ``rel_tol``.
        min_steps: never stop before this many optimiser steps (e.g. while a branch's accuracy has not
            started to fall yet).
        window_time: compare the validations of the last ``window_time`` units of decay time (lr x weight
            decay, summed over optimiser steps, at the rate read at each validation) instead of a number of
            validations. Needs weight decay > 0.
        min_time: never stop before this much decay time (beside ``min_steps``).
        smooth: compare the running mean over this many validations instead of the raw values (1: raw).
    """

    def __init__(self, monitor: tuple[str, ...] = ("train/loss", "norm/params"), rel_tol: float = 1e-3,
                 window: Optional[int] = None, abs_tol: Optional[dict[str, float]] = None, min_steps: int = 0,
                 window_time: Optional[float] = None, min_time: float = 0.0, smooth: int = 1) -> None:
        if smooth < 1:
            raise ValueError(f"smooth must be >= 1 (validations averaged), got {smooth}.")
        if window is not None and window_time is not None:
            raise ValueError("give window (validations) or window_time (lr x weight decay x steps), not both.")
        if window_time is not None and not window_time > 0:
            raise ValueError(f"window_time must be > 0, got {window_time}.")
        if min_time < 0:
            raise ValueError(f"min_time must be >= 0, got {min_time}.")
        if min_time and window_time is None:
            raise ValueError("min_time counts decay time: give window_time too (or use min_steps).")
        window = 10 if window is None and window_time is None else window
        if window is not None and window < 2:
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
        self.min_steps, self.window_time, self.min_time, self.smooth = min_steps, window_time, min_time, smooth
        self.history: list[list[float]] = []
        self.times: list[float] = []  # the decay time of each entry of history (with window_time)
        self.time, self.time_step = 0.0, 0  # decay time so far, and the step it was last counted to
        self.converged_step: int = -1

    @property
    def state_key(self) -> str:
        timed = {} if self.window_time is None else {"window_time": self.window_time, "min_time": self.min_time}
        smoothed = {} if self.smooth == 1 else {"smooth": self.smooth}  # the keys of runs saved before it existed
        return self._generate_state_key(monitor=self.monitor, rel_tol=self.rel_tol, window=self.window,
                                        abs_tol=sorted(self.abs_tol.items()), min_steps=self.min_steps, **timed,
                                        **smoothed)

    @property
    def converged(self) -> bool:
        return self.converged_step >= 0

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row."""
        return {"converged": self.converged, "events/converged_step": self.converged_step}

    def settled(self, history: list[list[float]]) -> bool:
        """The rule, on a window of validations (each the monitored metrics' values, oldest first; with
        ``smooth: k``, the k - 1 validations before the window first): every metric's spread within its
        tolerance."""
        for name, values in zip(self.monitor, zip(*history)):
            k = min(self.smooth, len(values))
            values = [sum(values[i:i + k]) / k for i in range(len(values) - k + 1)]  # running means (k = 1: raw)
            spread, latest = max(values) - min(values), abs(values[-1])
            tolerance = self.abs_tol.get(name, self.rel_tol * max(latest, 1e-12))
            if not math.isfinite(spread) or spread > tolerance:
                return False
        return True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.window_time is not None and not decay_rate(trainer, pl_module) > 0:
            raise ValueError("StopOnConvergence(window_time=...) measures lr x weight decay x steps, and this run "
                             "has no weight decay: give window (a number of validations) instead.")

    def update(self, step: int, values: list[float], rate: float = 0.0) -> bool:
        """Adds one validation (the monitored metrics' values after ``step`` optimiser steps; ``rate``, lr x
        weight decay per step since the last one, counts with ``window_time``) and says whether the rule is met.
        The callback feeds it every validation; a report can replay recorded curves through it."""
        lead = self.smooth - 1  # validations before the window, for its first running means
        if self.window_time is None:
            self.history = (self.history + [values])[-(self.window + lead):]
            if len(self.history) < self.window + lead or step < self.min_steps:
                return False
        else:
            self.time += (step - self.time_step) * rate
            self.time_step = step
            self.history, self.times = self.history + [values], self.times + [self.time]
            # keep the latest entry at or before the window's start, everything after it and lead before it
            slack = 1e-9 * self.time  # decay time is a float sum: 100 steps of 8e-3 make 79.99999..., not 80
            start = self.time - self.window_time + slack
            first = max([i for i, t in enumerate(self.times) if t <= start], default=-1)
            keep = max(first - lead, 0)
            self.history, self.times = self.history[keep:], self.times[keep:]
            if first < lead or self.time + slack < self.min_time or step < self.min_steps:
                return False
        return self.settled(self.history)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.converged:
            return
        metrics = trainer.callback_metrics
        missing = [m for m in self.monitor if m not in metrics]
        if missing:
            raise KeyError(f"StopOnConvergence monitors {missing}, which were not logged; logged: {sorted(metrics)}.")
        rate = decay_rate(trainer, pl_module) if self.window_time is not None else 0.0
        if not self.update(trainer.global_step, [float(metrics[m]) for m in self.monitor], rate):
            return
        self.converged_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({"events/converged_step": float(trainer.global_step)}, step=logging_step(trainer))
        trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "converged_step": self.converged_step, "times": self.times,
                "time": self.time, "time_step": self.time_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.converged_step = state_dict["history"], state_dict["converged_step"]
        self.times = state_dict.get("times", [])  # checkpoints written before window_time existed have none
        self.time, self.time_step = state_dict.get("time", 0.0), state_dict.get("time_step", 0)


def decay_rate(trainer: pl.Trainer, pl_module: Any) -> float:
    """lr x weight decay per optimiser step now: of the first parameter group with weight decay in a single
    run; of the member's own settings in an ensemble (whose callbacks cannot reach the shared optimiser)."""
    member_rate = getattr(pl_module, "decay_rate", None)
    if member_rate is not None:
        return member_rate()
    for group in trainer.optimizers[0].param_groups:
        if group.get("weight_decay", 0):
            return float(group["lr"]) * float(group["weight_decay"])
    return 0.0
