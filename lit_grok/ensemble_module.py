"""Ensembles on the Trainer: K members' data splits (EnsembleDataModule) and their joint training
(EnsembleModule). ``lit_grok.callbacks.Members`` runs the single-run callbacks per member and logs each
member as its own TensorBoard run; the CLI adds it to every ensemble run."""

from __future__ import annotations

import inspect
from typing import Any, Iterator, Literal, Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_grok import branching
from lit_grok.data import ModularArithmeticDataModule
from lit_grok.engine import StepEngine
from lit_grok.ensemble import EnsembleAdamW, EnsembleTransformer, member_loss, padded_batch, stack_networks
from lit_grok.model import Transformer
from lit_grok.module import SPLITS, GrokkingModule, NetworkCallable, build_filters, describe, resolve
from lit_grok.optim import FilteredGradients, GradientFilter, describe_filters

EnsembleBatch = tuple[Tensor, Tensor, Tensor]  # tokens [K, B, 3], answers [K, B], mask [K, B]


class _Once:
    """One batch per epoch (every member's whole set, padded); none when no member has a row (every member
    trains on every pair, so no held-out set)."""

    def __init__(self, batch: Optional[EnsembleBatch]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return 0 if self.batch is None else 1

    def __iter__(self) -> Iterator[EnsembleBatch]:
        if self.batch is not None:
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
        if k == 0:
            raise ValueError("train_sizes must list at least one member's D.")
        seeds, labels = _per_member(data_seeds, k, "data_seeds"), _per_member(random_labels, k, "random_labels")
        members = [ModularArithmeticDataModule(operation, modulus, train_size=d, data_seed=s, random_labels=r)
                   for d, s, r in zip(train_sizes, seeds, labels)]
        own = inspect.signature(ModularArithmeticDataModule.__init__).parameters
        for member in members:  # its save_hyperparameters also picked up this __init__'s arguments: drop them
            for key in [key for key in member.hparams if key not in own]:
                del member.hparams[key]
        self._use(members)

    @classmethod
    def from_datamodules(cls, members: list[ModularArithmeticDataModule]) -> "EnsembleDataModule":
        """The ensemble of K single-run DataModules, built by the constructor from their settings and then
        holding the modules themselves; they must share task and modulus and be full batch."""
        first = members[0]
        for m in members:
            if (m.operation, m.modulus) != (first.operation, first.modulus):
                raise ValueError(f"ensemble members must share one task, got {m.operation} mod {m.modulus} "
                                 f"beside {first.operation} mod {first.modulus}.")
            if m.batch_size is not None:
                raise ValueError(f"ensembles train full batch; a member has batch_size={m.batch_size}.")
            if m.op_token:
                raise ValueError("ensembles use the 3-token format a b =; a member has op_token: true.")
        ensemble = cls(first.operation, first.modulus, [m.train_size for m in members],
                       [m.data_seed for m in members], [m.random_labels for m in members])
        ensemble._use(members)  # the members as they are (the same splits: a split follows from D and data seed)
        return ensemble

    def _use(self, members: list[ModularArithmeticDataModule]) -> None:
        self.members = members  # each member's split lives in its own DataModule (DatasetSwap changes it)
        self.tokens, self.pairs = members[0].tokens, members[0].pairs  # [N, 3] and [N, 2], the same for every member
        self.answers = torch.stack([m.answers for m in members])  # [K, N]

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
        self.tokens, self.answers, self.pairs = self.tokens.to(device), self.answers.to(device), self.pairs.to(device)
        for member in self.members:  # members' callbacks (efficiency) evaluate the member's table on the device
            member.tokens, member.answers, member.pairs = member.tokens.to(device), member.answers.to(device), self.pairs

    def _batch(self, split: str) -> _Once:
        indices = [getattr(m, f"{split}_indices") for m in self.members]
        return _Once(padded_batch(self.tokens, self.answers, indices) if any(len(i) for i in indices) else None)

    def train_dataloader(self) -> _Once:
        return self._batch("train")

    def val_dataloader(self) -> list[_Once]:
        return [self._batch(split) for split in SPLITS]  # "val" then "train", as GrokkingModule expects

    def state_dict(self) -> dict[str, Any]:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for member, state in zip(self.members, state_dict["members"]):
            member.load_state_dict(state)


class EnsembleModule(branching.Branched, StepEngine, FilteredGradients, pl.LightningModule):
    """K networks trained together, each with its own seed, learning rate and weight decay. The constructor
    describes any group, so the CLI, ``from_modules`` and ``load_from_checkpoint`` all build it one way.

    At each validation it measures, per member, the single run's metrics (``val/*``, ``train/*``,
    ``norm/params``, ``data/train_size``) into ``member_metrics`` (name -> [K] tensor), which the
    ``Members`` callback logs as each member's own run. It logs the mean over members itself as
    ``members/{train,val}_{loss,acc}``.

    Args:
        vocab_size, n_classes, n_members: linked from EnsembleDataModule by the CLI.
        seeds: each member's initialisation seed (default 0..K-1): member k is ``network`` built right after
            ``torch.manual_seed(seeds[k])``, as a single run with ``seed_everything: seeds[k]`` builds it.
        network: every member's network, as in GrokkingModule (the paper's transformer by default; any
            network without buffers trains through ``torch.func.vmap``).
        lr, weight_decay: AdamW's, one value for all members or one per member.
        betas, eps: AdamW's.
        loss_dtype: the cross-entropy's dtype.
        init_from: a single-run checkpoint every member starts from (a branch, as in GrokkingModule; the
            members then differ in their data and hyperparameters, not their weights). The optimiser starts
            fresh.
        grad_filters: element-wise gradient filters (Grokfast), applied to the stacked parameters, so each
            member is filtered as in its single run.
    """

    def __init__(self, vocab_size: int, n_classes: int, n_members: int, seeds: Optional[list[int]] = None,
                 network: NetworkCallable = Transformer, lr: Union[float, list[float]] = 1e-3,
                 weight_decay: Union[float, list[float]] = 1.0, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8, loss_dtype: Literal["float64", "float32"] = "float64",
                 init_from: Optional[str] = None, grad_filters: Optional[list[GradientFilter]] = None) -> None:
        super().__init__()
        self.automatic_optimization = False  # the step engine's optimiser steps
        self.save_hyperparameters()
        self.hparams.update(network=describe(self.hparams.network))
        seeds = list(range(n_members)) if seeds is None else _per_member(seeds, n_members, "seeds")
        checkpoint = None if init_from is None else branching.read_checkpoint(init_from)
        self.init_from = init_from
        self.init_task = None if checkpoint is None else branching.task_of(checkpoint)
        start = None if checkpoint is None else branching.network_state(checkpoint, init_from)  # every member's
        build = resolve(network)
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(build(vocab_size, n_classes))
            if start is not None:
                branching.load_network(members[-1], start, init_from)
        lrs, decays = _per_member(lr, n_members, "lr"), _per_member(weight_decay, n_members, "weight_decay")
        if any(not r > 0 for r in lrs) or any(not w >= 0 for w in decays):
            raise ValueError(f"every member needs lr > 0 and weight_decay >= 0, got lr={lrs}, weight_decay={decays}.")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(betas)}.")
        self.grad_filters = build_filters(grad_filters or [])
        self.hparams.update(grad_filters=describe_filters(self.grad_filters))
        for gradient_filter in self.grad_filters:
            if not gradient_filter.elementwise:
                raise ValueError(f"{type(gradient_filter).__name__} acts on whole tensors, not per member: "
                                 f"ensembles take element-wise filters (Grokfast) only.")
        self._setup(stack_networks(members), lrs, decays, loss_dtype,  # refuses what cannot be stacked
                    [dict(seed=s, network=self.hparams.network, lr=r, weight_decay=w, betas=betas, eps=eps)
                     for s, r, w in zip(seeds, lrs, decays)])

    def _setup(self, net: nn.Module, lrs: list[float], decays: list[float], loss_dtype: str,
               member_hparams: list[dict[str, Any]]) -> None:
        self.net = net
        # buffers (not saved: the hyperparameters hold them) so that they move to the model's device with it and
        # the optimiser step never copies them from the host
        self.register_buffer("lr", torch.tensor(lrs, dtype=torch.float64), persistent=False)
        self.register_buffer("weight_decay", torch.tensor(decays, dtype=torch.float64), persistent=False)
        self.loss_dtype = getattr(torch, loss_dtype)
        self.member_hparams = member_hparams  # what a member's callbacks see (its HPARAMS entry in TensorBoard)
        self.member_metrics: dict[str, Tensor] = {}  # name -> [K], the latest validation's
        self._sums: dict[str, Tensor] = {}

    @classmethod
    def from_modules(cls, modules: list[GrokkingModule], seeds: Optional[list[int]] = None) -> "EnsembleModule":
        """The ensemble of K initialised single-run modules: built by the constructor from their settings,
        then each member takes its module's parameters as they are, so it follows its single run (to float32
        rounding) and the result loads back with ``EnsembleModule.load_from_checkpoint``.

        Raises ValueError for what an ensemble cannot reproduce: another optimiser than AdamW, differing
        networks, betas, eps or loss dtype, a warm-up, or an optimiser state carried over by a branch.
        """
        settings = []
        for m in modules:
            if not isinstance(m, GrokkingModule):
                raise ValueError(f"ensembles are built from GrokkingModules, got {type(m).__name__}.")
            if m.warmup_steps:
                raise ValueError("ensembles do not support warmup_steps yet.")
            if m.norm_constraint is not None:
                raise ValueError("ensembles do not support norm_constraint yet (a norm per member).")
            if m.init_optimizer:
                raise ValueError("ensemble members start with a fresh optimiser; init_optimizer needs single runs.")
            if m.hparams.get("loss_function", "cross_entropy") != "cross_entropy":
                raise ValueError(f"ensembles train with the cross-entropy; loss_function {m.hparams.loss_function!r} "
                                 f"needs single runs.")
            filters = [(type(f), f.settings()) for f in m.grad_filters]
            if filters != [(type(f), f.settings()) for f in modules[0].grad_filters]:
                raise ValueError("ensemble members must share their grad_filters (types and settings).")
            optimizer = m.make_optimizer(m.parameters())
            group = optimizer.param_groups[0]
            if type(optimizer) is not torch.optim.AdamW or group["amsgrad"] or group["maximize"]:
                raise ValueError(f"ensembles train with plain AdamW, got {optimizer!r}.")
            settings.append((group["lr"], group["weight_decay"], tuple(group["betas"]), group["eps"],
                             str(m.loss_dtype).removeprefix("torch.")))
        for i, name in ((2, "betas"), (3, "eps"), (4, "loss dtype")):
            if any(s[i] != settings[0][i] for s in settings):
                raise ValueError(f"ensemble members must share their {name}, got {[s[i] for s in settings]}.")
        weights = stack_networks([m.net for m in modules])  # refuses differing architectures: the first's describes all
        first = modules[0]
        ensemble = cls(first.hparams.vocab_size, first.hparams.n_classes, len(modules), seeds=seeds,
                       network=first.hparams.network, lr=[s[0] for s in settings],
                       weight_decay=[s[1] for s in settings], betas=settings[0][2], eps=settings[0][3],
                       loss_dtype=settings[0][4], init_from=first.init_from,
                       grad_filters=describe_filters(first.grad_filters))  # fresh filters, as described
        ensemble.net.load_state_dict(weights.state_dict())
        ensemble.member_hparams = [dict(m.hparams) for m in modules]
        return ensemble

    def member_net(self, k: int) -> nn.Module:
        """Member k as a standalone network (a copy), e.g. for callbacks that evaluate a network."""
        return self.net.member(k)

    def freeze_member(self, k: int) -> None:
        """Member k stops training (its learning rate becomes 0: no update, no decay): its run has stopped."""
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"][k] = 0.0

    def training_loss(self, batch: EnsembleBatch) -> Tensor:
        tokens, answers, mask = batch
        return member_loss(self.net(tokens), answers, mask, self.loss_dtype).sum()

    def validation_step(self, batch: EnsembleBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        tokens, answers, mask = batch
        logits = self.net(tokens)
        split = SPLITS[dataloader_idx]
        self._sums[f"{split}/loss"] = member_loss(logits, answers, mask, self.loss_dtype)
        self._sums[f"{split}/acc"] = ((logits.argmax(-1) == answers).double() * mask).sum(1) / mask.sum(1)

    def on_validation_epoch_start(self) -> None:
        self._sums = {}

    def on_validation_epoch_end(self) -> None:
        # a member without held-out pairs has NaN val/* (0 / 0); Members leaves them out of its run
        metrics = {name: values.detach().cpu() for name, values in self._sums.items()}
        for name, values in metrics.items():
            if not values.isnan().all():
                self.log(f"members/{name.replace('/', '_')}", values.nanmean().float())
        squares = torch.stack([p.detach().flatten(1).pow(2).sum(1) for p in self.net.parameters()])  # [n_params, K]
        metrics["norm/params"] = squares.sum(0).sqrt().cpu()
        data = self.trainer.datamodule
        if data is not None:
            metrics["data/train_size"] = torch.tensor([float(m.train_size) for m in data.members])
        self.member_metrics = metrics

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return EnsembleAdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay, betas=self.hparams.betas,
                             eps=self.hparams.eps)
