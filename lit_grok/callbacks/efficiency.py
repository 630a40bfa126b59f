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
- For tasks with a group relation r(a, b, c) (``add``: (a+b-c) mod P, ``sub``: (a-b-c) mod P), App. B's
  circuit split: G is the orthogonal projection of the centred table z (all P^2 pairs, all P classes)
  onto the trigonometric subspace span{cos(w_k r)}, w_k = 2 pi k / P, k = 1..P/2 (the C_gen proxy; the
  sine terms are not in it, as in Nanda et al. and App. B), and M = z - G (the C_mem proxy). Each r
  occurs P^2 times in the table, so G(r) is the even part of the mean of z over the entries with that r.
  ``circuits/gen_fraction`` = ||G|| / ||z||: the share of the logit *norm* in that subspace (the paper
  calls a network C_gen-only above 0.95). ``circuits/gen_logit`` is G at the true answer, one number for
  all pairs (r = 0 there); ``circuits/mem_logit_{split}`` is the mean of M at each split's labels (the
  random labels in a C_mem-only run).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

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


def mean_by_relation(z: Tensor, relation: Tensor) -> Tensor:
    """The mean of a table [N, C] over the entries with each relation value r = 0..P-1: [P]. Over a table
    where each r occurs equally often, it is the projection onto the functions of r."""
    n_values = int(relation.max()) + 1
    sums = torch.zeros(n_values, dtype=z.dtype, device=z.device).index_add_(0, relation.flatten(), z.flatten())
    return sums / torch.bincount(relation.flatten(), minlength=n_values).to(z.dtype).clamp(min=1)


def split_circuits(logits: Tensor, relation: Tensor) -> tuple[Tensor, Tensor]:
    """App. B's split of a full logit table [N, C] (every pair, every class) -> (G, M), each [N, C].

    ``relation`` [N, C] holds r in 0..P-1 and must take each value equally often (true of a group
    relation over the whole table). G projects the centred table onto span{cos(2 pi k r / P)}: the mean
    over entries of equal r is the projection onto all functions of r, and its even part in r (the
    average of r and -r) drops the sine terms. M is the rest.
    """
    z = centre(logits)
    by_r = mean_by_relation(z, relation)  # [P]
    n_values = len(by_r)
    even = (by_r + by_r[(-torch.arange(n_values, device=z.device)) % n_values]) / 2  # cosine terms only
    gen = (even - even.mean())[relation]
    return gen, z - gen


def gen_fraction(gen: Tensor, mem: Tensor) -> Tensor:
    """||G|| / ||G + M||: the share of the centred logit table's norm that lies in the trigonometric subspace."""
    return gen.norm() / (gen + mem).norm().clamp(min=1e-30)


def table_logits(pl_module: Any, tokens: Tensor, step: int) -> Tensor:
    """The network's logits on every pair, float32 as trained, computed once per validation: CircuitEfficiency
    and ProgressMeasures both need them, and a P^2 forward is most of either's cost. Cached on the module
    (a member's view, for an ensemble member) for the step and table it was computed for."""
    cached = getattr(pl_module, "_table_logits", None)
    if cached is not None and cached[0] == step and cached[1] is tokens:
        return cached[2]
    with torch.no_grad():
        logits = pl_module(tokens)  # [N_pairs, C]
    pl_module._table_logits = (step, tokens, logits)
    return logits


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
        logits = table_logits(pl_module, data.tokens, trainer.global_step).double()  # [N_pairs, C], every pair
        splits = {"train": data.train_indices.to(logits.device), "val": data.val_indices.to(logits.device)}
        for split, rows in splits.items():
            if len(rows) == 0:
                continue
            for stat, value in logit_stats(logits[rows], data.answers[rows]).items():
                metrics[f"logits/{split}_{stat}"] = value
            metrics[f"efficiency/{split}"] = metrics[f"logits/{split}_correct"] / norm
        relation_fn = OPERATIONS[data.operation].relation
        if relation_fn is not None:
            a, b = data.pairs[:, 0, None], data.pairs[:, 1, None]
            c = torch.arange(logits.shape[1], device=logits.device)[None, :]
            relation = relation_fn(a, b, c, data.n_elements)
            gen, mem = split_circuits(logits, relation)
            metrics["circuits/gen_fraction"] = gen_fraction(gen, mem)
            metrics["circuits/gen_logit"] = gen[relation == 0][0]  # G at the true answer: r = 0 for every pair
            for split, rows in splits.items():
                if len(rows):
                    metrics[f"circuits/mem_logit_{split}"] = mem[rows].gather(1, data.answers[rows, None]).mean()
        for name, value in metrics.items():  # identical on every rank (each evaluates the whole table)
            pl_module.log(name, value.float(), sync_dist=True)
