"""The paper's section-3 simulation: two hard-coded circuits whose logit scales are learned (App. C).

C_gen puts logit w_G on the correct class of every input; C_mem puts w_M on the correct class of
training inputs and on a fixed wrong class of test inputs. Each weight is a product of two trainable
subweights (w = w1 * w2, w1 starting at 0), so the second factor's initial value sets how fast the
circuit is learned. Efficiency enters only through weight decay on each circuit's parameter norm
P_i * w_i^(1/kappa), so the penalty is alpha/2 * sum_i P_i^2 * w_i^(2/kappa) (or alpha * ..., an option).
Training is plain, simultaneous gradient descent on the four subweights.
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn

from lit_grok.module import describe


class SimulationData(pl.LightningDataModule):
    """The simulation's task: q classes. Its inputs are implicit (the losses are closed-form), so every
    epoch is one empty batch."""

    def __init__(self, n_classes: int = 113) -> None:
        super().__init__()
        if n_classes < 3:
            raise ValueError(f"n_classes must be >= 3 (a correct class and a distinct wrong one), got {n_classes}.")
        self.n_classes = n_classes

    def train_dataloader(self) -> "_EmptyBatch":
        return _EmptyBatch()

    def __str__(self) -> str:  # Lightning's would build and describe the loaders
        return f"SimulationData(n_classes={self.n_classes})"


class _EmptyBatch:
    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Tensor]:
        yield torch.empty(0)


def plain_gd(params) -> torch.optim.Optimizer:
    """Gradient descent as in the paper's simulation: lr 0.01, no momentum."""
    return torch.optim.SGD(params, lr=0.01)


class CircuitSimulation(pl.LightningModule):
    """Two circuits, three ingredients; logs ``sim/*`` every ``steps_per_batch`` gradient steps.

    Args:
        n_classes: q, the number of classes (linked from ``SimulationData`` by the CLI).
        gen_norm: P_G, C_gen's norm constant (lower is more efficient).
        mem_norm: P_M, C_mem's norm constant.
        kappa: scaling exponent: a circuit of output scale w has parameter norm P * w^(1/kappa).
        weight_decay: alpha, the weight-decay strength.
        penalty: ``half`` for alpha/2 * sum P^2 w^(2/kappa) (App. D's normalisation), ``full`` for alpha * sum.
        gen_init: C_gen's initial second subweight (small: learned slowly).
        mem_init: C_mem's initial second subweight (1: learned fast).
        optimizer: builds the optimiser from the subweights; None means plain GD at lr 0.01 (``plain_gd``).
        steps_per_batch: gradient steps per Lightning batch; each one is an optimiser step, so
            ``trainer.max_steps`` counts gradient steps. Batching them keeps Lightning's per-batch cost off
            every step of a four-parameter model.
    """

    def __init__(
        self,
        n_classes: int = 113,
        gen_norm: float = 1.0,
        mem_norm: float = 2.0,
        kappa: float = 1.2,
        weight_decay: float = 0.005,
        penalty: Literal["half", "full"] = "half",
        gen_init: float = 0.005,
        mem_init: float = 1.0,
        optimizer: Optional[OptimizerCallable] = None,
        steps_per_batch: int = 100,
    ) -> None:
        super().__init__()
        if steps_per_batch < 1:
            raise ValueError(f"steps_per_batch must be >= 1, got {steps_per_batch}.")
        if kappa <= 0:
            raise ValueError(f"kappa must be > 0, got {kappa}.")
        self.save_hyperparameters()
        self.hparams.update(optimizer=describe(self.hparams.optimizer))
        self.automatic_optimization = False
        self.q = n_classes
        self.norms = (gen_norm, mem_norm)
        self.kappa, self.alpha = kappa, weight_decay * (0.5 if penalty == "half" else 1.0)
        self.gen = nn.Parameter(torch.tensor([0.0, gen_init], dtype=torch.float64))  # (w_G1, w_G2)
        self.mem = nn.Parameter(torch.tensor([0.0, mem_init], dtype=torch.float64))  # (w_M1, w_M2)
        self.make_optimizer = optimizer or plain_gd
        self.steps_per_batch = steps_per_batch

    def weights(self) -> tuple[Tensor, Tensor]:
        """The circuits' output scales (w_G, w_M), each the product of its two subweights."""
        return self.gen.prod(), self.mem.prod()

    def train_loss(self, w_gen: Tensor, w_mem: Tensor) -> Tensor:
        """CE with logit w_G + w_M on the correct class and 0 on the q - 1 others."""
        return torch.logaddexp(w_gen + w_mem, torch.tensor(math.log(self.q - 1), dtype=w_gen.dtype)) - (w_gen + w_mem)

    def test_loss(self, w_gen: Tensor, w_mem: Tensor) -> Tensor:
        """CE with w_G on the correct class, w_M on one wrong class and 0 on the q - 2 others."""
        rest = torch.tensor(math.log(self.q - 2), dtype=w_gen.dtype)
        return torch.logsumexp(torch.stack([w_gen, w_mem, rest]), 0) - w_gen

    def circuit_norms(self, w_gen: Tensor, w_mem: Tensor) -> tuple[Tensor, Tensor]:
        """Each circuit's parameter norm P_i * |w_i|^(1/kappa)."""
        return tuple(p * w.abs() ** (1 / self.kappa) for p, w in zip(self.norms, (w_gen, w_mem)))

    def objective(self) -> Tensor:
        """Train cross-entropy plus the weight-decay penalty on the circuits' norms."""
        w_gen, w_mem = self.weights()
        # (P * |w|^(1/kappa))^2 written as P^2 * |w|^(2/kappa): differentiable at w = 0 for kappa < 2
        penalty = sum(p**2 * w.abs() ** (2 / self.kappa) for p, w in zip(self.norms, (w_gen, w_mem)))
        return self.train_loss(w_gen, w_mem) + self.alpha * penalty

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        optimizer = self.optimizers()
        for _ in range(self.steps_per_batch):
            optimizer.zero_grad()
            self.manual_backward(self.objective())
            optimizer.step()
        self._log_state()

    @torch.no_grad()
    def _log_state(self) -> None:
        w_gen, w_mem = self.weights()
        norm_gen, norm_mem = self.circuit_norms(w_gen, w_mem)
        metrics = {
            "sim/train_loss": self.train_loss(w_gen, w_mem),
            "sim/test_loss": self.test_loss(w_gen, w_mem),
            # a prediction is correct when the correct logit beats every other one strictly
            "sim/train_acc": (w_gen + w_mem > 0).double(),
            "sim/test_acc": ((w_gen > w_mem) & (w_gen > 0)).double(),
            "sim/w_gen": w_gen, "sim/w_mem": w_mem,
            "sim/w_gen1": self.gen[0], "sim/w_gen2": self.gen[1],
            "sim/w_mem1": self.mem[0], "sim/w_mem2": self.mem[1],
            "sim/norm_gen": norm_gen, "sim/norm_mem": norm_mem,
            # Lightning's x-axis override: log against gradient steps, not batches
            "step": float(self.global_step),
        }
        self.log_dict({k: v.float() if isinstance(v, Tensor) else v for k, v in metrics.items()}, on_step=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())
