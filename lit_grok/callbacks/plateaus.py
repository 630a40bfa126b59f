"""Semi-grokking: plateaus of validation accuracy at a middling level after memorisation (paper section 5.3)."""

from __future__ import annotations

from statistics import mean
from typing import Any, Optional

import pytorch_lightning as pl


class PlateauDetector(pl.Callback):
    """Finds the stretches, after ``train/acc`` first reaches ``memorised``, in which ``val/acc`` stays within
    ``tolerance`` of the stretch's mean for at least ``min_steps`` at a level in [``low``, ``high``].

    Each plateau is logged when it ends (``events/plateau_start``, ``events/plateau_length``,
    ``events/plateau_level``) and kept in ``plateaus``; a plateau still open when fit ends is closed there.
    A plateau counts as ``transient`` when validation accuracy later reaches ``memorised`` (full
    generalisation), which the paper reports as common. Survives resume.
    """

    def __init__(self, low: float = 0.1, high: float = 0.9, tolerance: float = 0.05, min_steps: int = 2000,
                 memorised: float = 0.99) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}.")
        if tolerance <= 0 or min_steps < 0:
            raise ValueError("tolerance must be > 0 and min_steps >= 0.")
        self.low, self.high, self.tolerance, self.min_steps, self.memorised = low, high, tolerance, min_steps, memorised
        self.memorised_step: Optional[int] = None
        self.segment: list[tuple[int, float]] = []
        self.plateaus: list[dict[str, Any]] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(low=self.low, high=self.high, tolerance=self.tolerance,
                                        min_steps=self.min_steps, memorised=self.memorised)

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row: the number of plateaus and the longest one (-1: none)."""
        longest = max(self.plateaus, key=lambda p: p["end"] - p["start"], default=None)
        return {"plateaus": len(self.plateaus),
                "events/plateau_level": -1 if longest is None else longest["level"],
                "events/plateau_length": -1 if longest is None else longest["end"] - longest["start"],
                "plateau_transient": None if longest is None else longest["transient"]}

    def observe(self, step: int, train_acc: float, val_acc: float, trainer: Optional[pl.Trainer] = None) -> None:
        """Feeds one validation; the Lightning hook calls it, and tests can call it directly."""
        if self.memorised_step is None:
            if train_acc < self.memorised:
                return
            self.memorised_step = step
        if val_acc >= self.memorised:
            for plateau in self.plateaus:
                plateau["transient"] = True
        if self.segment and abs(val_acc - mean(v for _, v in self.segment)) > self.tolerance:
            self.close(trainer)
        self.segment.append((step, val_acc))

    def close(self, trainer: Optional[pl.Trainer] = None) -> None:
        """Ends the current stretch, recording it if it is a middling plateau long enough."""
        if self.segment:
            start, end = self.segment[0][0], self.segment[-1][0]
            level = mean(v for _, v in self.segment)
            if end - start >= self.min_steps and self.low <= level <= self.high:
                self.plateaus.append({"start": start, "end": end, "level": level, "transient": False})
                for logger in trainer.loggers if trainer is not None else []:
                    logger.log_metrics({"events/plateau_start": float(start), "events/plateau_length": float(end - start),
                                        "events/plateau_level": level}, step=end)
        self.segment = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if "val/acc" not in metrics:  # no held-out set (training on every pair): nothing to watch
            return
        self.observe(trainer.global_step, float(metrics.get("train/acc", 0.0)), float(metrics.get("val/acc", 0.0)),
                     trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"memorised_step": self.memorised_step, "segment": self.segment, "plateaus": self.plateaus}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memorised_step = state_dict["memorised_step"]
        self.segment = [tuple(p) for p in state_dict["segment"]]
        self.plateaus = state_dict["plateaus"]
