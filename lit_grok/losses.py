"""Losses beside the cross-entropy: StableMax (Prieto et al. 2025), which replaces softmax's exp by a
function that grows linearly, so that probabilities never round to exactly 1 (softmax collapse) and the
gradient never vanishes on fitted examples."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def stablemax(logits: Tensor) -> Tensor:
    """s(x) = x + 1 for x >= 0 and 1 / (1 - x) below: positive, increasing, and linear rather than exponential."""
    return torch.where(logits >= 0, logits.clamp(min=0) + 1, 1 / (1 - logits.clamp(max=0)))


def stablemax_cross_entropy(logits: Tensor, answers: Tensor, reduction: str = "mean") -> Tensor:
    """-log(s(x_y) / sum_c s(x_c)) per example: [N, C], [N] -> mean, sum or [N]."""
    s = stablemax(logits)
    losses = s.sum(-1).log() - s.gather(1, answers[:, None]).squeeze(1).log()
    return {"mean": losses.mean, "sum": losses.sum}.get(reduction, lambda: losses)()


LOSSES: dict[str, Callable[..., Tensor]] = {"cross_entropy": F.cross_entropy, "stablemax": stablemax_cross_entropy}
