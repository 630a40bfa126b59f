"""The local learning coefficient (Lau et al. 2023; Hoogland et al. 2024) at validations, estimated with the
field's own tool, ``devinterp`` (an optional extra: ``pip install -e ".[llc]"``)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F


def import_llc() -> Any:
    """devinterp's ``llc`` and HuggingFace's ``Dataset``, or one line saying how to install them."""
    try:
        from datasets import Dataset
        from devinterp.slt.llc import llc
    except ImportError as error:
        raise ImportError(f'LocalLearningCoefficient needs devinterp ({error.name} is missing): '
                          f'pip install -e ".[llc]"') from None
    return llc, Dataset


class LocalLearningCoefficient(pl.Callback):
    """Logs ``llc/mean`` and ``llc/std`` (over chains): devinterp's SGLD estimate of the local learning
    coefficient of the training loss around the current weights, n_beta x (mean sampled loss - loss here).
    The LLC measures how many effective parameters the solution uses; it is reported to fall when a network
    groks (a memorising solution replaced by a simpler general one).

    The estimate runs on a copy of the network, over the training pairs, with the global random state saved
    and restored, so training is unchanged. Its cost is ``num_chains x num_draws`` forward and backward passes
    over ``batch_size`` pairs, so ``every_n_validations`` keeps it to a few points per run.

    Args:
        every_n_validations: estimate at every n-th validation (the first included).
        lr: SGLD step size (epsilon).
        n_beta: inverse temperature; default n / log n for n training pairs (the usual choice).
        localization: the pull back to the current weights (gamma).
        num_chains, num_draws: SGLD chains and draws per chain (400: where the chains flattened at step size
            1e-4 in lit_grok's calibration at P=53, docs/results/llc.md; ``reports.llc_calibration`` checks a setting).
        batch_size: pairs per SGLD step; default all training pairs (capped at 4096).
        seed: the chains' seed.
    """

    def __init__(self, every_n_validations: int = 10, lr: float = 1e-4, n_beta: Optional[float] = None,
                 localization: float = 100.0, num_chains: int = 2, num_draws: int = 400,
                 batch_size: Optional[int] = None, seed: int = 100) -> None:
        for name, value in (("every_n_validations", every_n_validations), ("num_chains", num_chains),
                            ("num_draws", num_draws)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not lr > 0 or (n_beta is not None and not n_beta > 0) or localization < 0:
            raise ValueError(f"LocalLearningCoefficient needs lr > 0, n_beta > 0 and localization >= 0, got "
                             f"lr={lr}, n_beta={n_beta}, localization={localization}.")
        import_llc()  # at config time: a missing extra is one line, before any training
        self.every, self.lr, self.n_beta, self.localization = every_n_validations, lr, n_beta, localization
        self.num_chains, self.num_draws, self.batch_size, self.seed = num_chains, num_draws, batch_size, seed
        self.validations = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every=self.every, lr=self.lr, n_beta=self.n_beta,
                                        localization=self.localization, chains=self.num_chains,
                                        draws=self.num_draws, batch_size=self.batch_size, seed=self.seed)

    def sample(self, net: torch.nn.Module, tokens: torch.Tensor, answers: torch.Tensor) -> dict[str, Any]:
        """devinterp's estimate of the LLC of ``net`` on these pairs (tokens [N, T], answers [N]): ``mean`` and
        ``std`` over chains, ``n_beta``, ``init_loss`` (the loss at the weights) and ``trace`` (per chain, the
        mean sampled loss at each draw; empty where the estimator gives none), for ``plateau``."""
        llc, Dataset = import_llc()
        n = len(answers)
        batch = min(self.batch_size or n, n, 4096)
        # devinterp wants rows of "input_ids" and a per-token loss [B, T - 1]: each row is (pair index, answer)
        ids = torch.stack([torch.arange(n), answers.cpu()], 1)
        data = Dataset.from_dict({"input_ids": ids.tolist()}).with_format("torch")
        tokens = tokens.detach()

        def loss_fn(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
            logits = model(tokens[rows[:, 0].to(tokens.device)])  # [B, C]
            return F.cross_entropy(logits.double(), rows[:, 1].to(logits.device), reduction="none")[:, None]

        model = copy.deepcopy(net).train()
        n_beta = self.n_beta or n / math.log(n)
        device = str(next(net.parameters()).device)
        with torch.random.fork_rng(devices=[] if device == "cpu" else None), \
                tempfile.TemporaryDirectory() as folder, contextlib.redirect_stderr(io.StringIO()):
            result = llc(model, data, {"train": (data, 1)}, lr=self.lr, n_beta=n_beta, num_chains=self.num_chains,
                         num_draws=self.num_draws, batch_size=batch, localization=self.localization,
                         loss_fn=loss_fn, device=device, init_seed=self.seed, num_init_loss_batches=1,
                         output_path=f"{folder}/samples.zarr")
            trace = np.asarray(result["loss_trace"]).tolist() if "loss_trace" in result else []  # [chains][draws]
            init_loss = float(result["init_loss"]) if "init_loss" in result else math.nan
        return {"mean": float(result["llc_mean"]), "std": float(result["llc_std"]), "n_beta": n_beta,
                "init_loss": init_loss, "trace": trace}

    def estimate(self, net: torch.nn.Module, tokens: torch.Tensor, answers: torch.Tensor) -> tuple[float, float]:
        """(mean, std over chains) of the LLC of ``net`` on these pairs (tokens [N, T], answers [N])."""
        result = self.sample(net, tokens, answers)
        return result["mean"], result["std"]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if (self.validations - 1) % self.every:
            return
        data = trainer.datamodule
        rows = data.train_indices.to(data.tokens.device)  # tokens and answers share the device (setup)
        with torch.inference_mode(False), torch.enable_grad():
            mean, std = self.estimate(pl_module.net, data.tokens[rows], data.answers[rows])
        pl_module.log("llc/mean", mean)
        pl_module.log("llc/std", std)

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = state_dict["validations"]


def plateau(trace: list[list[float]], init_loss: float, n_beta: float) -> float:
    """How far an SGLD chain was still climbing at its end, the calibration check devinterp's guidance asks
    for: on the LLC scale n_beta x (sampled loss - init_loss), the rise from the draws' third quarter to their
    last, as a fraction of the last quarter's level; the largest over chains. Near 0: the chains have
    flattened (a usable step size); large: still climbing (too small a step, or too few draws); NaN: a chain
    diverged or the trace is too short (under 8 draws)."""
    worst = 0.0
    for chain in trace:
        quarter = len(chain) // 4
        if quarter < 2 or not all(math.isfinite(x) for x in chain):
            return math.nan
        third = n_beta * (sum(chain[-2 * quarter:-quarter]) / quarter - init_loss)
        last = n_beta * (sum(chain[-quarter:]) / quarter - init_loss)
        worst = max(worst, abs(last - third) / max(abs(last), 1e-12))
    return worst
