"""Ensembles on the Trainer: K members' data splits (EnsembleDataModule) and their joint training
(EnsembleModule), each member logged as its own TensorBoard run under ``<log_dir>/member_<k>/``."""

from __future__ import annotations

from typing import Any, Iterator, Literal, Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor

from lit_grok.data import ModularArithmeticDataModule
from lit_grok.ensemble import EnsembleAdamW, EnsembleTransformer, member_loss, padded_batch
from lit_grok.model import Transformer
from lit_grok.module import SPLITS

EnsembleBatch = tuple[Tensor, Tensor, Tensor]  # tokens [K, B, 3], answers [K, B], mask [K, B]


class _Once:
    """One batch per epoch (every member's whole set, padded)."""

    def __init__(self, batch: EnsembleBatch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[EnsembleBatch]:
        yield self.batch


def _per_member(value: Union[Any, list], k: int, name: str) -> list:
    values = value if isinstance(value, list) else [value] * k
    if len(values) != k:
        raise ValueError(f"{name} has {len(values)} entries for {k} members.")
    return values


class EnsembleDataModule(pl.LightningDataModule):
    """One task, K members, each with its own training-set size, data seed and labels (full batch).

    Args:
        operation, modulus: the task, as in ModularArithmeticDataModule.
        train_sizes: each member's D; their number is K.
        data_seeds: each member's split seed (one value for all, or a list).
        random_labels: each member's labels (one value for all, or a list).
    """

    def __init__(self, operation: str = "add", modulus: Optional[int] = 113, train_sizes: list[int] = [3830],
                 data_seeds: Union[int, list[int]] = 0, random_labels: Union[bool, list[bool]] = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        k = len(train_sizes)
        seeds, labels = _per_member(data_seeds, k, "data_seeds"), _per_member(random_labels, k, "random_labels")
        self.members = [ModularArithmeticDataModule(operation, modulus, train_size=d, data_seed=s, random_labels=r)
                        for d, s, r in zip(train_sizes, seeds, labels)]
        self.tokens = self.members[0].tokens  # [N, 3], the same table for every member
        self.answers = torch.stack([m.answers for m in self.members])  # [K, N]

    @property
    def vocab_size(self) -> int:
        return self.members[0].vocab_size

    @property
    def n_classes(self) -> int:
        return self.members[0].n_classes

    @property
    def n_members(self) -> int:
        return len(self.members)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.tokens, self.answers = self.tokens.to(device), self.answers.to(device)

    def _batch(self, split: str) -> _Once:
        return _Once(padded_batch(self.tokens, self.answers, [getattr(m, f"{split}_indices") for m in self.members]))

    def train_dataloader(self) -> _Once:
        return self._batch("train")

    def val_dataloader(self) -> list[_Once]:
        return [self._batch(split) for split in SPLITS]  # "val" then "train", as GrokkingModule expects

    def state_dict(self) -> dict[str, Any]:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for member, state in zip(self.members, state_dict["members"]):
            member.load_state_dict(state)


class EnsembleModule(pl.LightningModule):
    """K paper transformers trained together, each with its own seed, learning rate and weight decay.

    Per member and split it measures loss and accuracy at each validation and writes them, with the
    member's parameter norm, to ``<log_dir>/member_<k>/`` under the single-run metric names, so
    TensorBoard's run selector shows every member as a run. The mean over members is logged as
    ``members/{train,val}_{loss,acc}``.

    Args:
        vocab_size, n_classes, n_members: linked from EnsembleDataModule by the CLI.
        seeds: each member's initialisation seed (default 0..K-1).
        n_layers, d_model, n_heads, d_mlp: the members' shape (the paper's by default).
        lr, weight_decay: AdamW's, one value for all members or one per member.
        betas, eps: AdamW's.
        loss_dtype: the cross-entropy's dtype.
    """

    def __init__(self, vocab_size: int, n_classes: int, n_members: int, seeds: Optional[list[int]] = None,
                 n_layers: int = 1, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512,
                 lr: Union[float, list[float]] = 1e-3, weight_decay: Union[float, list[float]] = 1.0,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8,
                 loss_dtype: Literal["float64", "float32"] = "float64") -> None:
        super().__init__()
        self.save_hyperparameters()
        seeds = list(range(n_members)) if seeds is None else _per_member(seeds, n_members, "seeds")
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(Transformer(vocab_size, n_classes, n_layers=n_layers, d_model=d_model, n_heads=n_heads,
                                       d_mlp=d_mlp))
        self.net = EnsembleTransformer(members)
        self.lr = torch.tensor(_per_member(lr, n_members, "lr"), dtype=torch.float64)
        self.weight_decay = torch.tensor(_per_member(weight_decay, n_members, "weight_decay"), dtype=torch.float64)
        self.loss_dtype = getattr(torch, loss_dtype)
        self._sums: dict[str, Tensor] = {}
        self._writers: list = []

    def training_step(self, batch: EnsembleBatch, batch_idx: int) -> Tensor:
        tokens, answers, mask = batch
        return member_loss(self.net(tokens), answers, mask, self.loss_dtype).sum()

    def validation_step(self, batch: EnsembleBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        tokens, answers, mask = batch
        logits = self.net(tokens)
        split = SPLITS[dataloader_idx]
        self._sums[f"{split}/loss"] = member_loss(logits, answers, mask, self.loss_dtype)
        self._sums[f"{split}/acc"] = ((logits.argmax(-1) == answers).double() * mask).sum(1) / mask.sum(1)

    def on_validation_epoch_end(self) -> None:
        metrics = {name: values.detach().cpu() for name, values in self._sums.items()}
        metrics["norm/params"] = torch.stack([p.detach().flatten(1).pow(2).sum(1) for p in self.net.parameters()]).sum(0).sqrt().cpu()
        for name, values in metrics.items():
            if name != "norm/params":
                self.log(f"members/{name.replace('/', '_')}", values.mean().float())
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank asks
        if not self.trainer.is_global_zero or log_dir is None or self.trainer.sanity_checking:
            return
        if not self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers = [SummaryWriter(f"{log_dir}/member_{k}") for k in range(self.hparams.n_members)]
        for k, writer in enumerate(self._writers):
            for name, values in metrics.items():
                writer.add_scalar(name, float(values[k]), self.global_step)
            writer.flush()

    def on_fit_end(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return EnsembleAdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay, betas=self.hparams.betas,
                             eps=self.hparams.eps)
