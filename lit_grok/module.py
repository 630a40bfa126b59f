"""The LightningModule: cross-entropy at the answer position, AdamW with the paper's defaults, the metrics."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Literal, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_grok import branching
from lit_grok.data import Batch
from lit_grok.engine import StepEngine
from lit_grok.losses import LOSSES
from lit_grok.model import Transformer
from lit_grok.optim import (ConstrainedNorm, FilteredGradients, FixedNorm, GradientFilter, describe_filters,
                            fused_where_possible, global_norm)

NetworkCallable = Callable[[int, int], nn.Module]  # (vocab_size, n_classes) -> network
SPLITS = ("val", "train")  # evaluation dataloader 0 is the held-out set, 1 the whole training set


def paper_adamw(params) -> torch.optim.Optimizer:
    """AdamW as in the paper (App. A): lr 1e-3, betas (0.9, 0.98), weight decay 1.0 on every parameter."""
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)


def describe(fn: Any) -> Any:
    """A callable as ``{"class_path", "init_args"}``, so that hyperparameters given from Python (a class, a
    ``functools.partial``) pickle into checkpoints that ``torch.load(weights_only=True)`` can read back.
    Config values from the CLI (dicts) and None pass through."""
    if fn is None or isinstance(fn, (dict, str, int, float)):
        return fn
    if isinstance(fn, functools.partial) and getattr(fn.func, "__name__", "") == "call_without_instantiate_context":
        # jsonargparse's form of a class from a config: partial(call_without_instantiate_context, ..., cls, **kw)
        return {"class_path": describe(fn.args[-1])["class_path"], "init_args": dict(fn.keywords)}
    if isinstance(fn, functools.partial):
        return {"class_path": describe(fn.func)["class_path"], "init_args": dict(fn.keywords)}
    return {"class_path": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"}


def resolve(fn: Any) -> Any:
    """The inverse of ``describe``: a ``{"class_path", "init_args"}`` description as a callable (so that
    ``load_from_checkpoint`` rebuilds a module whose hyperparameters hold one); anything else as it is."""
    if isinstance(fn, dict) and "class_path" in fn:
        module_name, _, name = fn["class_path"].rpartition(".")
        return functools.partial(getattr(importlib.import_module(module_name), name), **fn.get("init_args", {}))
    return fn


def build_filters(filters: Sequence[Any]) -> list[GradientFilter]:
    """Gradient filters from instances or from their descriptions (hyperparameters read back from a checkpoint)."""
    return [resolve(f)() if isinstance(f, dict) else f for f in filters]


def parameter_norm(module: nn.Module) -> Tensor:
    """Global L2 norm of all of a module's parameters (``lit_grok.optim.global_norm``)."""
    return global_norm(module.parameters())


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Settings torch accepts but that cannot train: a learning rate of 0 or below."""
    for group in optimizer.param_groups:
        lr = float(group.get("lr", 1.0))
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")


class GrokkingModule(branching.Branched, StepEngine, ConstrainedNorm, FilteredGradients, pl.LightningModule):
    """Trains a network on (a, b, =) -> answer with full-batch AdamW, and measures train/val loss and accuracy.
    Full-batch runs take many optimiser steps per Lightning batch (``lit_grok.engine``).

    Args:
        vocab_size: input vocabulary (linked from the DataModule by the CLI).
        n_classes: number of answers (linked from the DataModule by the CLI).
        network: builds the network from (vocab_size, n_classes); in YAML a ``class_path`` such as
            ``lit_grok.model.Transformer`` with its ``init_args`` minus those two.
        optimizer: builds the optimiser from the parameters; None means the paper's AdamW (``paper_adamw``).
        warmup_steps: linear learning-rate warm-up over this many steps (0: none, as in the paper).
        loss_dtype: dtype of the cross-entropy; float64 as the reference implementations, which keeps
            the loss resolvable once it falls below float32's rounding of log-probabilities near 1.
        init_from: a checkpoint whose network this run starts from (a *branch*: new run, step 0, its own
            data and hyperparameters), e.g. the network pre-trained on every pair that ungrokking runs
            continue from. Its shape and task must match the config's. ``--ckpt_path`` resumes instead.
        init_optimizer: a branch also starts from the checkpoint's AdamW moments and step count (with this
            run's learning rate and weight decay); by default it starts with a fresh optimiser, as a new
            run does. The paper does not say which it used.
        loss_function: ``cross_entropy`` (the paper's) or ``stablemax`` (Prieto et al. 2025, which avoids
            softmax collapse); it is also the ``train/loss`` and ``val/loss`` measured.
        grad_filters: gradient filters applied in order before every optimiser step
            (``lit_grok.optim``: ``GrokfastEMA``, ``GrokfastMA``, ``OrthogonalGradient``).
        norm_constraint: ``lit_grok.optim.FixedNorm``: the parameters' global norm held fixed after every
            optimiser step (Omnigrok); usually with ``weight_decay: 0``.
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        network: NetworkCallable = Transformer,
        optimizer: Optional[OptimizerCallable] = None,
        warmup_steps: int = 0,
        loss_dtype: Literal["float64", "float32"] = "float64",
        init_from: Optional[str] = None,
        init_optimizer: bool = False,
        loss_function: Literal["cross_entropy", "stablemax"] = "cross_entropy",
        grad_filters: Optional[list[GradientFilter]] = None,
        norm_constraint: Optional[FixedNorm] = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False  # the step engine's optimiser steps
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        if init_optimizer and init_from is None:
            raise ValueError("init_optimizer needs init_from: the checkpoint whose optimiser state to start from.")
        self.save_hyperparameters()
        self.hparams.update(network=describe(self.hparams.network), optimizer=describe(self.hparams.optimizer))
        self.net = resolve(network)(vocab_size, n_classes)
        self.init_task: Optional[dict[str, Any]] = None
        self._init_optimizer_state: Optional[dict[str, Any]] = None
        if init_from is not None:
            checkpoint = branching.read_checkpoint(init_from)
            branching.load_network(self.net, branching.network_state(checkpoint, init_from), init_from)
            self.init_task = branching.task_of(checkpoint)
            if init_optimizer:
                if not checkpoint.get("optimizer_states"):
                    raise ValueError(f"init_optimizer: {init_from!r} holds no optimiser state (a weights-only save).")
                self._init_optimizer_state = checkpoint["optimizer_states"][0]
        self.init_from, self.init_optimizer = init_from, init_optimizer
        self.make_optimizer = resolve(optimizer) or paper_adamw
        try:  # bad settings fail when the config is built, not deep inside fit
            check_optimizer(self.make_optimizer(self.net.parameters()))
        except ValueError as error:
            raise ValueError(f"optimizer: {error}") from None
        self.warmup_steps = warmup_steps
        self.loss_dtype = getattr(torch, loss_dtype)
        self.loss_function = LOSSES[loss_function]
        self.grad_filters = build_filters(grad_filters or [])
        self.hparams.update(grad_filters=describe_filters(self.grad_filters))
        self.norm_constraint = build_filters([norm_constraint])[0] if norm_constraint is not None else None
        if self.norm_constraint is not None:
            self.hparams.update(norm_constraint=describe_filters([self.norm_constraint])[0])
        self.eval_metrics = nn.ModuleDict(
            {f"{split}_{stat}": MeanMetric() for split in SPLITS for stat in ("loss", "acc")}
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] -> answer logits [B, n_classes]."""
        return self.net(tokens)

    def loss(self, logits: Tensor, answers: Tensor, reduction: str = "mean") -> Tensor:
        """The loss (cross-entropy, or StableMax's) of the answer logits, computed in ``loss_dtype``."""
        return self.loss_function(logits.to(self.loss_dtype), answers, reduction=reduction)

    def training_loss(self, batch: Batch) -> Tensor:
        # Nothing is logged here: every metric is measured at validation, so steps in between never sync.
        tokens, answers, n_global = batch
        world = self.trainer.world_size if self._trainer is not None else 1
        # Each rank holds a shard of the batch; DDP averages gradients over ranks, so scaling the shard's
        # summed loss by world / n_global makes the averaged gradient the full batch's mean-loss gradient.
        return self.loss(self(tokens), answers, reduction="sum") * (world / n_global)

    def _evaluate(self, batch: Batch, dataloader_idx: int) -> None:
        tokens, answers, _ = batch
        n = len(answers)
        split = SPLITS[dataloader_idx]
        if n == 0:  # a rank's shard of a tiny set can be empty: it adds nothing, but logs as every rank does
            zero = torch.zeros((), device=answers.device)
            self.eval_metrics[f"{split}_loss"].update(zero, 0)
            self.eval_metrics[f"{split}_acc"].update(zero, 0)
        else:
            logits = self(tokens)
            self.eval_metrics[f"{split}_loss"].update(self.loss(logits, answers), n)
            self.eval_metrics[f"{split}_acc"].update((logits.argmax(-1) == answers).float().mean(), n)
        for stat in ("loss", "acc"):
            self.log(f"{split}/{stat}", self.eval_metrics[f"{split}_{stat}"], on_step=False, on_epoch=True,
                     add_dataloader_idx=False, metric_attribute=f"eval_metrics.{split}_{stat}")

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, dataloader_idx)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, dataloader_idx)

    def _log_state(self) -> None:
        # identical on every rank; sync_dist (one all-reduce per validation) keeps Lightning's DDP check quiet
        self.log("norm/params", parameter_norm(self), sync_dist=True)
        train_size = getattr(self.trainer.datamodule, "train_size", None)
        if train_size is not None:
            self.log("data/train_size", float(train_size), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_state()

    def on_test_epoch_end(self) -> None:
        self._log_state()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self._trainer is not None and self.trainer.datamodule is not None:
            self.check_data(self.trainer.datamodule)

    def check_data(self, datamodule: Any) -> None:
        """Called by the CLI once the config is built (and at setup): the task a branch starts from, and that the
        network reads the data's sequences, one forward pass on the first and last pair, so that a network with
        too few positions (``op_token: true`` makes 4 tokens) is one line, not a shape error inside torch."""
        super().check_data(datamodule)
        tokens = getattr(datamodule, "tokens", None)
        if tokens is None or len(tokens) == 0:
            return
        sample = tokens[[0, -1]].to(next(self.net.parameters()).device)  # [2, T]
        try:
            with torch.no_grad():
                self.net(sample)
        except (RuntimeError, IndexError) as error:
            first = str(error).strip().splitlines()[0]
            raise ValueError(f"{type(self.net).__name__} cannot read this data's {tokens.shape[1]}-token sequences "
                             f"({first}): set its n_ctx to at least {tokens.shape[1]} "
                             f"(model.init_args.network.init_args.n_ctx; a network named by class_path keeps "
                             f"init_args such as n_ctx from the one it replaces).") from None

    def configure_optimizers(self):
        optimizer = fused_where_possible(self.make_optimizer(self.parameters()))
        if self._init_optimizer_state is not None:  # a branch with the pre-trained run's moments
            branching.load_optimizer_state(optimizer, self._init_optimizer_state)
        if not self.warmup_steps:
            return optimizer
        warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / self.warmup_steps))
        return [optimizer], [warmup]  # stepped after every optimiser step by the engine
