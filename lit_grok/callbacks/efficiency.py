"""Circuit efficiency, measured at every validation: parameter norms, logit scale, and App. B's circuit split.

Definitions (one place; the README repeats them):

- Logits are centred per example, z(a, b, c) = L(a, b, c) - mean_c' L(a, b, c'). Softmax ignores a shift
  per example, so only centred logits are comparable across runs; centring removes the shift and nothing else.
- ``logits/{split}_correct``: mean over the split's pairs of the centred logit of the answer y, z(a, b, y).
- ``logits/{split}_margin``: mean of L(a, b, y) - max_{c != y} L(a, b, c) (shift-invariant as it is).
- ``logits/{split}_prob``: mean softmax probability of the answer.
- ``efficiency/{split}`` = ``logits/{split}_correct`` / ``norm/params``: answer logit per unit of parameter
  norm. A circuit is more efficient when it reaches the same logit with less norm; the ratio compares
  runs of one architecture (the logit is not linear in the norm, so it is a summary, not a constant).
- ``norm/{group}``: L2 norm of the parameters of each module type (embed: token and position embeddings,
  attn: attention, mlp: MLP layers, unembed, other: anything else such as LayerNorm); the squares of the
  groups sum to the square of ``norm/params``.
- For tasks with a group relation r(a, b, c) (``add``, ``sub``): the centred table z splits into
  G(a, b, c) = mean of z over all entries with the same r (the part that depends on r alone: the span of
  the trigonometric functions of r that App. B projects onto, the C_gen proxy) and the residual
  M = z - G (the C_mem proxy). ``circuits/gen_logit_{split}`` and ``circuits/mem_logit_{split}`` are
  their mean answer logits; ``circuits/gen_fraction`` = ||G||^2 / ||z||^2 over the whole table (the paper
  calls a network C_gen-only above 0.95).
"""

from __future__ import annotations

from collections import defaultdict

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lit_grok.tasks import OPERATIONS

NORM_GROUPS = ("embed", "attn", "mlp", "unembed", "other")


def norm_group(name: str, module: nn.Module) -> str:
    """The group of a module's own parameters, from its type and its path in the network."""
    path = name.split(".")
    if isinstance(module, nn.Embedding):
        return "embed"
    if path[-1] == "unembed":
        return "unembed"
    if "attn" in path:
        return "attn"
    if "mlp" in path or "hidden" in path:
        return "mlp"
    return "other"


def group_norms(net: nn.Module) -> dict[str, Tensor]:
    """L2 norm of each parameter group; groups with no parameters are left out."""
    squares: dict[str, list[Tensor]] = defaultdict(list)
    for name, module in net.named_modules():
        for p in module.parameters(recurse=False):
            squares[norm_group(name, module)].append(p.detach().pow(2).sum())
    return {group: torch.stack(s).sum().sqrt() for group, s in squares.items()}


def centre(logits: Tensor) -> Tensor:
    """Subtract each example's mean logit: [N, C] -> [N, C]."""
    return logits - logits.mean(-1, keepdim=True)


def logit_stats(logits: Tensor, answers: Tensor) -> dict[str, Tensor]:
    """Mean centred answer logit, mean margin over the best wrong class, mean answer probability."""
    correct = logits.gather(1, answers[:, None]).squeeze(1)
    wrong = logits.scatter(1, answers[:, None], float("-inf")).max(-1).values
    return {
        "correct": centre(logits).gather(1, answers[:, None]).mean(),
        "margin": (correct - wrong).mean(),
        "prob": logits.softmax(-1).gather(1, answers[:, None]).mean(),
    }


def split_circuits(logits: Tensor, relation: Tensor) -> tuple[Tensor, Tensor]:
    """Centred logit table [N, C] -> (G, M): G averages it over entries with equal relation [N, C] in 0..R-1."""
    z = centre(logits)
    n_values = int(relation.max()) + 1
    sums = torch.zeros(n_values, dtype=z.dtype, device=z.device).index_add_(0, relation.flatten(), z.flatten())
    counts = torch.bincount(relation.flatten(), minlength=n_values).to(z.dtype)
    gen = (sums / counts.clamp(min=1))[relation]
    return gen, z - gen


class CircuitEfficiency(pl.Callback):
    """Logs norms, logit scale, efficiency and (for ``add``/``sub``) the C_gen/C_mem split at every validation.

    It evaluates the whole pair table once per validation (P^2 examples, no gradient), so it is cheap
    next to the training steps between validations.
    """

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        data = trainer.datamodule
        net = pl_module.net
        metrics: dict[str, Tensor] = {f"norm/{g}": v for g, v in group_norms(net).items()}
        norm = torch.stack([v for v in metrics.values()]).pow(2).sum().sqrt()
        with torch.no_grad():
            logits = pl_module(data.tokens).double()  # [N_pairs, C], every pair
        splits = {"train": data.train_indices.to(logits.device), "val": data.val_indices.to(logits.device)}
        for split, rows in splits.items():
            if len(rows) == 0:
                continue
            for stat, value in logit_stats(logits[rows], data.answers[rows]).items():
                metrics[f"logits/{split}_{stat}"] = value
            metrics[f"efficiency/{split}"] = metrics[f"logits/{split}_correct"] / norm
        relation_fn = OPERATIONS[data.operation].relation
        if relation_fn is not None:
            a, b = data.tokens[:, 0, None], data.tokens[:, 1, None]
            c = torch.arange(logits.shape[1], device=logits.device)[None, :]
            gen, mem = split_circuits(logits, relation_fn(a, b, c, data.n_elements))
            z_norm2 = (gen.pow(2).sum() + mem.pow(2).sum()).clamp(min=1e-30)
            metrics["circuits/gen_fraction"] = gen.pow(2).sum() / z_norm2
            for split, rows in splits.items():
                if len(rows):
                    answers = data.answers[rows, None]
                    metrics[f"circuits/gen_logit_{split}"] = gen[rows].gather(1, answers).mean()
                    metrics[f"circuits/mem_logit_{split}"] = mem[rows].gather(1, answers).mean()
        for name, value in metrics.items():  # identical on every rank (each evaluates the whole table)
            pl_module.log(name, value.float(), sync_dist=True)
