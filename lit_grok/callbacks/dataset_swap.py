"""Ungrokking: shrink the training set mid-run to a nested random subset (paper section 4.2)."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

from lit_grok.loops import reload_dataloaders


def nested_subset(train_indices: Tensor, size: int, seed: int) -> Tensor:
    """``size`` of the current training indices, drawn by a generator seeded with ``seed`` alone (so every
    DDP rank and every resume draws the same), sorted."""
    order = torch.randperm(len(train_indices), generator=torch.Generator().manual_seed(seed))
    return train_indices[order[:size]].sort().values


class DatasetSwap(pl.Callback):
    """Replaces the training set by a smaller subset of itself, once, at a step or once grokked.

    Args:
        new_size: D', the new number of training pairs (the paper's unit). Exactly one of new_size/new_fraction.
        new_fraction: D' as a fraction of the current training set.
        at_step: swap after this many optimiser steps.
        after_grokked: swap once ``val/acc`` has been >= ``threshold`` at this many consecutive validations.
            Exactly one of at_step/after_grokked.
        threshold: validation accuracy that counts as grokked.
        seed: seeds the subset, independently of every other seed.
        validation: ``complement`` (default, as the paper): after the swap, validate on every pair not in the
            new training set, the removed ones included; ``original``: keep the validation set as it was.
        reset_optimizer: clear the optimiser's state (AdamW moments) at the swap. The paper does not say;
            the default keeps it, so the swap changes the data and nothing else.
    """

    def __init__(self, new_size: Optional[int] = None, new_fraction: Optional[float] = None,
                 at_step: Optional[int] = None, after_grokked: Optional[int] = None, threshold: float = 0.99,
                 seed: int = 0, validation: Literal["complement", "original"] = "complement",
                 reset_optimizer: bool = False) -> None:
        if (new_size is None) == (new_fraction is None):
            raise ValueError("give exactly one of new_size (D') and new_fraction.")
        if new_size is not None and new_size < 1:
            raise ValueError(f"new_size must be >= 1, got {new_size}.")
        if new_fraction is not None and not 0.0 < new_fraction < 1.0:
            raise ValueError(f"new_fraction must lie strictly between 0 and 1, got {new_fraction}.")
        if (at_step is None) == (after_grokked is None):
            raise ValueError("give exactly one trigger: at_step or after_grokked.")
        if at_step is not None and at_step < 0:
            raise ValueError(f"at_step must be >= 0, got {at_step}.")
        if after_grokked is not None and after_grokked < 1:
            raise ValueError(f"after_grokked must be >= 1 validation, got {after_grokked}.")
        self.new_size, self.new_fraction = new_size, new_fraction
        self.at_step, self.after_grokked, self.threshold = at_step, after_grokked, threshold
        self.seed, self.validation, self.reset_optimizer = seed, validation, reset_optimizer
        self.swap_step: Optional[int] = None
        self.streak = 0  # consecutive validations at or above threshold

    @property
    def state_key(self) -> str:
        """Distinct per setting, so that two swaps in one run keep their own checkpoint state."""
        return self._generate_state_key(new_size=self.new_size, new_fraction=self.new_fraction, at_step=self.at_step,
                                        after_grokked=self.after_grokked, seed=self.seed)

    def target_size(self, current: int) -> int:
        return self.new_size if self.new_size is not None else max(1, round(self.new_fraction * current))

    def summary(self) -> dict[str, Any]:
        """For a sweep's result row (-1: no swap)."""
        return {"events/swap_step": -1 if self.swap_step is None else self.swap_step}

    def event_steps(self) -> list[int]:
        """The step of a pending swap at a step (the step engine ends a batch there, so the swap is exact)."""
        return [self.at_step] if self.at_step is not None and self.swap_step is None else []

    def check_data(self, datamodule: Any) -> None:
        """Called by the CLI once the config is built: D' must fit in the training set it is drawn from."""
        if self.swap_step is None and self.new_size is not None and self.new_size > datamodule.train_size:
            raise ValueError(f"DatasetSwap new_size {self.new_size} is larger than the training set it is drawn "
                             f"from ({datamodule.train_size} pairs).")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_data(trainer.datamodule)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A run resumed at or past at_step (e.g. ungrokking a grokked checkpoint with at_step: 0) swaps
        # before its first step; the fit loop requests its loaders again before that step.
        if self.swap_step is None and self.at_step is not None and trainer.global_step >= self.at_step:
            self.swap(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.after_grokked is None or self.swap_step is not None:
            return
        grokked = float(trainer.callback_metrics.get("val/acc", 0.0)) >= self.threshold
        self.streak = self.streak + 1 if grokked else 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.swap_step is not None:
            return
        due = (trainer.global_step >= self.at_step if self.at_step is not None
               else self.streak >= self.after_grokked)
        if due:
            self.swap(trainer)

    def swap(self, trainer: pl.Trainer) -> None:
        data = trainer.datamodule
        old_size = data.train_size
        train = nested_subset(data.train_indices, self.target_size(old_size), self.seed)
        if self.validation == "complement":
            keep = torch.ones(len(data.answers), dtype=torch.bool)
            keep[train] = False
            val = keep.nonzero().squeeze(1)
        else:
            val = data.val_indices
        data.set_split(train, val)
        reload_dataloaders(trainer)
        if self.reset_optimizer:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()
        self.swap_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({"events/swap_step": float(self.swap_step), "events/swap_from_size": float(old_size),
                                "events/swap_to_size": float(len(train))}, step=self.swap_step)

    def state_dict(self) -> dict[str, Any]:
        return {"swap_step": self.swap_step, "streak": self.streak}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.swap_step, self.streak = state_dict["swap_step"], state_dict["streak"]
