"""Slingshots (Thilak et al. 2022): late in training with an adaptive optimiser, the training loss spikes by
orders of magnitude from a low plateau and recovers, while the norm of the last layer jumps; the cycle
repeats. Detected at validations from ``train/loss`` and a norm metric."""

from __future__ import annotations

import math
from typing import Any, Optional

import pytorch_lightning as pl

from lit_grok.loops import logging_step


class SlingshotDetector(pl.Callback):
    """Counts slingshots: a rise of ``train/loss`` by at least ``min_orders`` orders of magnitude above its
    lowest value since the previous one, back down by half of that, with the ``norm`` metric moving by at
    least ``min_norm_change`` (relative: max - min over the spike, against the value where it started).

    Each is logged when it ends as ``events/slingshot`` (the orders of magnitude of the spike) at the
    step of its peak, with ``events/slingshot_count``; ``slingshots`` holds (peak step, orders, norm change)
    of each. Part of the checkpoint, so a resumed run continues the count. An ensemble member counts its own.

    Args:
        min_orders: how far (log10) the loss must rise above its running minimum to be a spike.
        norm: the norm that must jump (``norm/unembed``: the last layer, as Thilak et al.; any logged metric).
        min_norm_change: the relative change of ``norm`` over the spike below which it is not counted.
    """

    def __init__(self, min_orders: float = 2.0, norm: str = "norm/unembed", min_norm_change: float = 0.02) -> None:
        if min_orders <= 0:
            raise ValueError(f"min_orders must be > 0, got {min_orders}.")
        if min_norm_change < 0:
            raise ValueError(f"min_norm_change must be >= 0, got {min_norm_change}.")
        self.min_orders, self.norm, self.min_norm_change = min_orders, norm, min_norm_change
        self.slingshots: list[tuple[int, float, float]] = []
        self._low: Optional[float] = None  # lowest log10 loss since the last slingshot
        self._low_norm: Optional[float] = None  # the norm there
        self._spike: Optional[dict[str, float]] = None  # the spike in progress

    @property
    def state_key(self) -> str:
        return self._generate_state_key(min_orders=self.min_orders, norm=self.norm)

    def summary(self) -> dict[str, Any]:
        """For a run's result: how many, and the largest (-1: none)."""
        largest = max(self.slingshots, key=lambda s: s[1], default=None)
        return {"slingshots": len(self.slingshots),
                "events/slingshot_step": -1 if largest is None else largest[0],
                "events/slingshot_orders": -1 if largest is None else largest[1]}

    def observe(self, step: int, loss: float, norm: float) -> Optional[tuple[int, float, float]]:
        """Feeds one validation; returns the slingshot that ended there, if one did (tests call it directly)."""
        if not (loss > 0 and math.isfinite(loss) and math.isfinite(norm)):
            return None
        level = math.log10(loss)
        if self._spike is None:
            if self._low is None or level < self._low:
                self._low, self._low_norm = level, norm
            elif level - self._low >= self.min_orders:
                self._spike = {"peak": level, "step": step, "lo": min(norm, self._low_norm), "hi": max(norm, self._low_norm)}
            return None
        spike = self._spike
        spike["lo"], spike["hi"] = min(spike["lo"], norm), max(spike["hi"], norm)
        if level > spike["peak"]:
            spike["peak"], spike["step"] = level, step
        if level - self._low > self.min_orders / 2:
            return None  # still up
        orders, change = spike["peak"] - self._low, (spike["hi"] - spike["lo"]) / self._low_norm
        self._spike, self._low, self._low_norm = None, level, norm
        if change < self.min_norm_change:
            return None
        event = (int(spike["step"]), orders, change)
        self.slingshots.append(event)
        return event

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "train/loss" not in metrics or self.norm not in metrics:
            return
        event = self.observe(trainer.global_step, float(metrics["train/loss"]), float(metrics[self.norm]))
        if event is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"events/slingshot": event[1], "events/slingshot_count": len(self.slingshots)},
                                   step=logging_step(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {"slingshots": [list(s) for s in self.slingshots], "low": self._low, "low_norm": self._low_norm,
                "spike": self._spike}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.slingshots = [tuple(s) for s in state_dict["slingshots"]]  # type: ignore[misc]
        self._low, self._low_norm, self._spike = state_dict["low"], state_dict["low_norm"], state_dict["spike"]
