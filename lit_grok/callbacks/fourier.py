"""Nanda et al.'s progress measures (ICLR 2023) for ``add``/``sub`` at any P: the Fourier spectrum of the
token embedding, its key frequencies, restricted and excluded loss, and softmax collapse (Prieto et al. 2025).

Definitions (the metrics table in docs/metrics.md repeats them):

- The embedding's rows for the P number tokens, W [P, d], are expanded in the real Fourier basis of Z_P;
  frequency k (w_k = 2 pi k / P, k = 1..P/2) carries the energy of its cosine and sine rows, e_k. The
  constant row is left out (it moves every token alike).
- Key frequencies: the fewest k, largest first, whose energies sum to ``share`` (default 0.9) of the
  total; ``fourier/n_key_freqs`` counts them. A trained generalising network has a handful; a random
  embedding needs about ``share`` of all (P - 1) / 2.
- ``fourier/ipr``: the inverse participation ratio sum_k p_k^2 of p_k = e_k / sum e: 1 for one frequency,
  2 / (P - 1) for a flat spectrum.
- The centred logit table z over every pair and class is projected on cos(w_k r), r = (a+b-c) mod P, as in
  ``circuits/gen_fraction``. ``progress/restricted_loss``: the training loss of the key frequencies' terms
  alone; ``progress/excluded_loss``: the training loss of z with those terms removed. Restricted loss
  falls before the held-out loss does (circuit formation); excluded loss rises as the generalising
  circuit takes over the training set.
- ``progress/softmax_collapse``: the share of training pairs whose answer probability is exactly 1 in the
  float32 softmax of the network's logits; their gradient is exactly zero.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from lit_grok.callbacks.efficiency import centre, mean_by_relation, table_logits
from lit_grok.tasks import OPERATIONS


def fourier_basis(p: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """The real orthonormal Fourier basis of Z_p without its constant row: rows [2K', p] (cos k, sin k for
    k = 1..(p-1)/2, and cos for k = p/2 when p is even) and each row's frequency k [2K']."""
    n = torch.arange(p, dtype=torch.float64, device=device)
    rows, freqs = [], []
    for k in range(1, p // 2 + 1):
        w = 2 * math.pi * k * n / p
        if 2 * k == p:  # the Nyquist frequency has a cosine only, of norm sqrt(p)
            rows.append(torch.cos(w) / math.sqrt(p))
            freqs.append(k)
        else:
            rows += [torch.cos(w) * math.sqrt(2 / p), torch.sin(w) * math.sqrt(2 / p)]
            freqs += [k, k]
    return torch.stack(rows), torch.tensor(freqs, device=device)


def embedding_spectrum(weight: Tensor) -> Tensor:
    """Energy per frequency k = 1..p/2 of a number-token embedding [p, d] over Z_p: [p // 2]."""
    p = weight.shape[0]
    basis, freqs = fourier_basis(p, weight.device)
    energy = (basis @ weight.double()).pow(2).sum(1)  # [rows]
    return torch.zeros(p // 2, dtype=energy.dtype, device=energy.device).index_add_(0, freqs - 1, energy)


def key_frequencies(energies: Tensor, share: float = 0.9) -> list[int]:
    """The fewest frequencies (1-based k), largest energy first, whose energies reach ``share`` of the total."""
    order = torch.argsort(energies, descending=True)
    cumulative = torch.cumsum(energies[order], 0) / energies.sum().clamp(min=1e-300)
    n = int((cumulative < share).sum()) + 1
    return sorted(int(k) + 1 for k in order[: min(n, len(order))])


def ipr(energies: Tensor) -> Tensor:
    """Inverse participation ratio of the spectrum: sum of squared energy shares."""
    shares = energies / energies.sum().clamp(min=1e-300)
    return shares.pow(2).sum()


def cosine_terms(logits: Tensor, relation: Tensor, freqs: list[int]) -> Tensor:
    """The centred full table's projection on cos(w_k r) for the given k: [N, C]. ``relation`` takes each of
    its P values equally often (a group relation over every pair and class)."""
    by_r = mean_by_relation(centre(logits.double()), relation)  # [P]: mean of z at each r
    p = len(by_r)
    r = torch.arange(p, dtype=by_r.dtype, device=by_r.device)
    terms = torch.zeros_like(by_r)
    for k in freqs:
        wave = torch.cos(2 * math.pi * k * r / p)
        terms += wave * (by_r @ wave) / (wave @ wave)
    return terms[relation]


def number_embedding(net: torch.nn.Module, p: int) -> Tensor:
    """The number tokens' embedding [p, d]: a network's ``embed`` table, or for a one-hot MLP (OneHotMLP) the
    first layer's columns for the first operand, which play that part."""
    if hasattr(net, "embed"):
        return net.embed.weight.detach()[:p]
    if hasattr(net, "n_symbols") and hasattr(net, "layers"):
        return net.layers[0].weight.detach()[:, :p].T
    raise ValueError(f"ProgressMeasures reads the number tokens' embedding, and {type(net).__name__} has none "
                     f"(no `embed` table, not a OneHotMLP).")


def softmax_collapse(logits: Tensor, answers: Tensor) -> Tensor:
    """The share of rows whose answer probability is exactly 1 in the float32 softmax (zero gradient)."""
    probs = logits.float().softmax(-1).gather(1, answers[:, None])
    return (probs == 1.0).double().mean()


class ProgressMeasures(pl.Callback):
    """Logs the embedding's Fourier spectrum measures, restricted and excluded loss and softmax collapse at
    every validation (``add``/``sub`` only), and draws the spectrum at fit end (``fourier.png``).

    Args:
        share: the share of the embedding's energy the key frequencies carry.
        key_frequencies: fixed key frequencies (k = 1..P/2) for restricted and excluded loss, as Nanda et al.
            read them once from the trained network (a finished run's ``fourier.json`` lists its final ones);
            by default they are chosen at every validation from the current spectrum. ``fourier/n_key_freqs``
            counts the current spectrum's either way.
    """

    def __init__(self, share: float = 0.9, key_frequencies: Optional[list[int]] = None) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must lie in (0, 1], got {share}.")
        if key_frequencies is not None and (not key_frequencies or min(key_frequencies) < 1):
            raise ValueError(f"key_frequencies must be frequencies k >= 1, got {key_frequencies}.")
        self.share = share
        self.fixed_keys = None if key_frequencies is None else sorted(set(int(k) for k in key_frequencies))
        self.spectrum: list[float] = []

    @property
    def state_key(self) -> str:
        fixed = {} if self.fixed_keys is None else {"key_frequencies": self.fixed_keys}
        return self._generate_state_key(share=self.share, **fixed)

    def check_data(self, datamodule: Any) -> None:
        """Called by the CLI once the config is built: the measures need a group relation (add, sub), and fixed
        key frequencies must exist at the task's P."""
        operation = getattr(datamodule, "operation", None)
        if operation is None or OPERATIONS[operation].relation is None:
            raise ValueError(f"ProgressMeasures needs the operation add or sub (a Fourier circuit over Z_P), "
                             f"got {operation}.")
        p = getattr(datamodule, "n_elements", None)
        if self.fixed_keys is not None and p is not None and max(self.fixed_keys) > p // 2:
            raise ValueError(f"key_frequencies go up to P/2 = {p // 2} at P = {p}, got {self.fixed_keys}.")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        data = trainer.datamodule
        relation_fn = OPERATIONS[data.operation].relation
        if relation_fn is None:
            return
        net = pl_module.net
        p = data.n_elements
        energies = embedding_spectrum(number_embedding(net, p))
        current = key_frequencies(energies, self.share)
        keys = current if self.fixed_keys is None else self.fixed_keys
        self.spectrum = energies.tolist()
        metrics = {"fourier/n_key_freqs": torch.tensor(float(len(current))), "fourier/ipr": ipr(energies)}
        rows = data.train_indices.to(energies.device)
        logits = table_logits(pl_module, data.tokens, trainer.global_step)  # [N_pairs, C], every pair, float32
        a, b = data.pairs[:, 0, None], data.pairs[:, 1, None]
        c = torch.arange(logits.shape[1], device=logits.device)[None, :]
        restricted = cosine_terms(logits, relation_fn(a, b, c, p), keys)
        answers = data.answers[rows]
        metrics["progress/restricted_loss"] = F.cross_entropy(restricted[rows], answers)
        metrics["progress/excluded_loss"] = F.cross_entropy(centre(logits.double())[rows] - restricted[rows], answers)
        metrics["progress/softmax_collapse"] = softmax_collapse(logits[rows], answers)
        for name, value in metrics.items():  # identical on every rank (each evaluates the whole table)
            pl_module.log(name, value.float(), sync_dist=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # every rank asks (a broadcast under DDP)
        if not trainer.is_global_zero or not self.spectrum:
            return
        fig = self.figure()
        if log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            fig.savefig(os.path.join(log_dir, "fourier.png"), dpi=120)
            with open(os.path.join(log_dir, "fourier.json"), "w") as f:  # what a second run fixes its keys to
                json.dump({"step": trainer.global_step, "share": self.share,
                           "key_frequencies": key_frequencies(torch.tensor(self.spectrum), self.share),
                           "fixed_key_frequencies": self.fixed_keys, "spectrum": self.spectrum}, f, indent=1)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("fourier/embedding_spectrum", fig, global_step=trainer.global_step,
                                             close=False)

    def figure(self):
        """The embedding's energy per frequency at the last validation, key frequencies marked."""
        from matplotlib.figure import Figure  # not pyplot: the global backend is left alone

        energies = torch.tensor(self.spectrum)
        keys = key_frequencies(energies, self.share)
        fig = Figure(figsize=(7, 3.5))
        ax = fig.subplots()
        ks = list(range(1, len(self.spectrum) + 1))
        ax.bar(ks, self.spectrum, color=["tab:red" if k in keys else "tab:grey" for k in ks])
        ax.set(xlabel="frequency k", ylabel="embedding energy",
               title=f"{len(keys)} key frequencies ({self.share:.0%} of the energy): {keys[:8]}")
        fig.tight_layout()
        return fig

    def state_dict(self) -> dict[str, Any]:
        return {"spectrum": self.spectrum}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spectrum = list(state_dict["spectrum"])
