"""The modular-arithmetic DataModule: the whole task table on the model's device, split by a seeded permutation."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor

from lit_grok.tasks import check_task, make_table

Batch = tuple[Tensor, Tensor, int]  # tokens [b, 3] (a, b, "="), answers [b], the batch's size over all ranks


TASK_KEYS = ("operation", "modulus", "random_labels", "data_seed")  # what a checkpoint's split depends on


def task_mismatch(saved: dict[str, Any], datamodule: Any, keys: tuple[str, ...] = TASK_KEYS) -> Optional[str]:
    """The first of ``keys`` on which a checkpoint's saved data settings and a DataModule differ, as
    "key=saved there, key=current in the config", or None when they agree (keys either lacks are skipped)."""
    for key in keys:
        if key in saved and hasattr(datamodule, key) and saved[key] != getattr(datamodule, key):
            return f"{key}={saved[key]!r} there, {key}={getattr(datamodule, key)!r} in the config"
    return None


def available_memory() -> Optional[int]:
    """Bytes of memory this machine can still give (Linux's MemAvailable, else physical memory); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_size(operation: str, n_elements: int, n_pairs: int, batch_size: Optional[int],
               available: Optional[int], n_tokens: int = 3) -> None:
    """Refuses, before anything is allocated, a task whose pair table or one full-batch forward's logits
    (every pair of the largest split at once: float32 logits over n_elements classes) exceed ``available``."""
    if available is None:
        return
    table = n_pairs * (3 + n_tokens) * 8  # pairs (2), tokens and answers (1), int64
    logits = min(batch_size or n_pairs, n_pairs) * n_elements * 4
    if table + logits > available:
        raise ValueError(f"{operation} with {n_elements} elements has {n_pairs:,} pairs: the pair table needs "
                         f"{_gb(table)} and a forward pass over {'a batch' if batch_size else 'every pair'} "
                         f"{_gb(logits)} of logits, but this machine has {_gb(available)} available; use a smaller "
                         f"modulus{'' if batch_size else ' or a batch_size'}.")


class TensorBatches:
    """Yields (tokens, answers, global size) slices of tensors already on the device: no Dataset, no collation.

    ``batch_size=None`` yields the whole set once (full batch: an epoch is one optimiser step). Otherwise the rows are
    cut into ``ceil(N / batch_size)`` batches, reshuffled each pass when ``shuffle_seed`` is given; each
    pass's order depends only on (shuffle_seed, pass number), so a resumed run sees the same batches.
    Under DDP every rank forms the same batches and keeps rows ``rank::world`` of each: the shards are
    disjoint and cover the batch exactly, uneven sizes included (no padding, no duplicated samples).
    """

    def __init__(self, tokens: Tensor, answers: Tensor, batch_size: Optional[int] = None,
                 shuffle_seed: Optional[int] = None, epoch: Callable[[], int] = lambda: 0, rank: int = 0,
                 world: int = 1) -> None:
        self.tokens, self.answers = tokens, answers
        self.batch_size = batch_size or max(len(answers), 1)
        self.shuffle_seed = shuffle_seed
        self.epoch = epoch
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.answers) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.answers)
        if n == 0:  # an empty held-out set (training on every pair): no batch at all
            return
        if self.batch_size >= n and self.world == 1:
            yield self.tokens, self.answers, n
            return
        order = torch.arange(n, device=self.answers.device)
        if self.shuffle_seed is not None and self.batch_size < n:
            g = torch.Generator().manual_seed(self.shuffle_seed * 1_000_003 + self.epoch())
            order = torch.randperm(n, generator=g).to(self.answers.device)
        for rows in order.split(self.batch_size):
            shard = rows[self.rank :: self.world]
            yield self.tokens[shard], self.answers[shard], len(rows)


class ModularArithmeticDataModule(pl.LightningDataModule):
    """All pairs of a binary operation, a seeded train/validation split, and the batches fed to the loop.

    Args:
        operation: a name from ``lit_grok.tasks.OPERATIONS`` (``add``, ``sub``, ``mul``, ``div``, ...).
        modulus: P for tasks over Z_P; leave unset (null) for the S_5 tasks.
        train_size: the paper's D, the number of training pairs. Give exactly one of train_size/train_fraction.
            Every pair (the paper's pre-training for ungrokking) leaves no held-out set: ``val/*`` is then
            not logged until a ``DatasetSwap`` makes the removed pairs the validation set.
        train_fraction: D as a fraction of all pairs (rounded to the nearest integer); 1.0 is every pair.
        data_seed: seeds the split and the random labels, independently of the model seed.
        batch_size: None for full batch (the paper's setting: an epoch is one optimiser step); an int for seeded minibatches.
        random_labels: give every pair a fixed, uniformly random answer (memorisation-only networks).
        op_token: write each pair as 4 tokens ``a op b =`` (Power et al. 2022's format, used by Grokfast's
            code; ``op`` is token ``n_elements + 1``) instead of the paper's 3, ``a b =``.
    """

    def __init__(
        self,
        operation: str = "add",
        modulus: Optional[int] = 113,
        train_size: Optional[int] = None,
        train_fraction: Optional[float] = None,
        data_seed: int = 0,
        batch_size: Optional[int] = None,
        random_labels: bool = False,
        op_token: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        op = check_task(operation, modulus)
        self.operation, self.modulus, self.data_seed = operation, modulus, data_seed
        self.batch_size, self.random_labels, self.op_token = batch_size, random_labels, op_token
        self.n_elements = op.n_elements(modulus)
        check_size(operation, self.n_elements, self.n_elements * (self.n_elements - op.nonzero_b), batch_size,
                   available_memory(), n_tokens=3 + op_token)

        pairs, answers = make_table(operation, modulus)
        n_pairs = len(answers)
        if (train_size is None) == (train_fraction is None):
            raise ValueError("give exactly one of train_size (the paper's D) and train_fraction.")
        if train_fraction is not None:
            if not 0.0 < train_fraction <= 1.0:
                raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}.")
            train_size = round(train_fraction * n_pairs)
        assert train_size is not None
        if not 1 <= train_size <= n_pairs:
            raise ValueError(
                f"train_size must be between 1 and {n_pairs} (there are {n_pairs} pairs for "
                f"{operation} with {self.n_elements} elements), got {train_size}."
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or null (full batch), got {batch_size}.")

        g = torch.Generator().manual_seed(data_seed)
        order = torch.randperm(n_pairs, generator=g)
        if random_labels:
            answers = torch.randint(self.n_elements, (n_pairs,), generator=g)
        equals = torch.full((n_pairs, 1), self.n_elements, dtype=torch.long)  # the "=" token
        self.pairs = pairs  # [N, 2]: (a, b), every pair in row-major order
        if op_token:  # [N, 4]: a op b =
            self.tokens = torch.cat([pairs[:, :1], equals + 1, pairs[:, 1:], equals], dim=1)
        else:  # [N, 3]: a b =
            self.tokens = torch.cat([pairs, equals], dim=1)
        self.answers = answers  # [N]
        self.train_indices = order[:train_size].sort().values
        self.val_indices = order[train_size:].sort().values

    # ----- sizes the model needs (linked by the CLI) -----
    @property
    def vocab_size(self) -> int:
        """Input vocabulary: the elements plus the "=" token (and the "op" token)."""
        return self.n_elements + 1 + self.op_token

    @property
    def n_classes(self) -> int:
        """Output space: the elements only."""
        return self.n_elements

    @property
    def train_size(self) -> int:
        return len(self.train_indices)

    # ----- the split, owned here so that callbacks can change it and checkpoints restore it -----
    def set_split(self, train_indices: Tensor, val_indices: Tensor) -> None:
        """Replace the split (indices into the full pair table); loaders built afterwards use it."""
        train_indices, val_indices = train_indices.long().cpu(), val_indices.long().cpu()
        if len(torch.cat([train_indices, val_indices]).unique()) != len(train_indices) + len(val_indices):
            raise ValueError("train and validation indices must be distinct.")
        self.train_indices, self.val_indices = train_indices, val_indices

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.tokens, self.answers, self.pairs = self.tokens.to(device), self.answers.to(device), self.pairs.to(device)

    def _batches(self, indices: Tensor, batch_size: Optional[int], shuffle: bool) -> TensorBatches:
        rows = indices.to(self.answers.device)
        seed = self.data_seed if shuffle else None
        if self.trainer is None:
            return TensorBatches(self.tokens[rows], self.answers[rows], batch_size, seed)
        trainer = self.trainer
        return TensorBatches(self.tokens[rows], self.answers[rows], batch_size, seed, lambda: trainer.current_epoch,
                             trainer.global_rank, trainer.world_size)

    def train_dataloader(self) -> TensorBatches:
        return self._batches(self.train_indices, self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[TensorBatches]:
        """Two evaluation sets: the held-out pairs (``val/*``) and the whole training set (``train/*``)."""
        return [self._batches(self.val_indices, self.batch_size, shuffle=False),
                self._batches(self.train_indices, self.batch_size, shuffle=False)]

    def test_dataloader(self) -> list[TensorBatches]:
        return self.val_dataloader()

    def __str__(self) -> str:  # Lightning's would build and describe the loaders
        return (f"ModularArithmeticDataModule({self.operation}, modulus={self.modulus}, "
                f"train_size={self.train_size}, val_size={len(self.val_indices)})")

    # ----- checkpointing: the split travels with the weights -----
    def state_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "modulus": self.modulus, "random_labels": self.random_labels,
                "data_seed": self.data_seed, "train_indices": self.train_indices, "val_indices": self.val_indices}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mismatch = task_mismatch(state_dict, self)
        if mismatch:
            raise ValueError(f"the checkpoint's data differs from the config's: {mismatch}.")
        self.set_split(state_dict["train_indices"], state_dict["val_indices"])
