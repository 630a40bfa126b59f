"""K independent networks trained as one: stacked parameters, batched matrix products, per-member AdamW.

This is the core of vectorised ensembles: ``EnsembleTransformer`` stacks K ``Transformer``s (the paper's
model, no LayerNorm) along a leading member dimension with hand-written batched products;
``EnsembleNetwork`` stacks any other network (the MLP, LayerNorm transformers) through ``torch.func.vmap``;
``stack_networks`` picks one. ``EnsembleAdamW`` applies AdamW with a
learning rate and weight decay per member (AdamW is elementwise, so this is the same arithmetic as K
optimisers), and ``member_loss`` averages each member's cross-entropy over its own training set, given as
padded indices with a mask. Members never share a parameter, so one backward pass gives each member the
gradient it would get alone. ``lit_grok.ensemble_module`` puts them on the Trainer.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lit_grok.model import Transformer

# (name in the ensemble, attribute path in a Transformer block); Linear weights keep their [out, in] layout
_BLOCK = (("query", "attn.query.weight"), ("key_value", "attn.key_value.weight"), ("proj", "attn.proj.weight"),
          ("fc_in", "mlp.fc_in.weight"), ("fc_in_bias", "mlp.fc_in.bias"), ("fc_out", "mlp.fc_out.weight"),
          ("fc_out_bias", "mlp.fc_out.bias"))


def _get(module: nn.Module, path: str) -> Tensor:
    for name in path.split("."):
        module = getattr(module, name)
    return module  # type: ignore[return-value]


class EnsembleTransformer(nn.Module):
    """K Transformers of one shape, stacked: tokens [K, B, T] -> answer logits [K, B, n_classes].

    Built from K initialised members, so each starts exactly where its single run would.
    """

    def __init__(self, members: Sequence[Transformer]) -> None:
        super().__init__()
        first = members[0]
        if any(not isinstance(b.ln_attn, nn.Identity) for m in members for b in m.blocks):
            raise ValueError("EnsembleTransformer supports the paper's model without LayerNorm only.")
        self.n_heads = first.blocks[0].attn.n_heads
        self.n_layers = len(first.blocks)

        def stack(get) -> nn.Parameter:
            return nn.Parameter(torch.stack([get(m).detach().clone() for m in members]))

        self.embed = stack(lambda m: m.embed.weight)  # [K, V, C]
        self.pos_embed = stack(lambda m: m.pos_embed.weight)  # [K, T, C]
        self.blocks = nn.ModuleList()
        for i in range(self.n_layers):
            block = nn.ParameterDict({name: stack(lambda m, p=path: _get(m.blocks[i], p)) for name, path in _BLOCK})
            self.blocks.append(block)
        self.unembed = stack(lambda m: m.unembed.weight)  # [K, n_classes, C]

    @property
    def n_members(self) -> int:
        return self.embed.shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        K, B, T = tokens.shape
        V, C = self.embed.shape[1:]
        H = self.n_heads
        offsets = (torch.arange(K, device=tokens.device) * V)[:, None, None]
        x = self.embed.reshape(K * V, C)[tokens + offsets] + self.pos_embed[:, None, :T]  # [K, B, T, C]
        for i, p in enumerate(self.blocks):
            last = i == self.n_layers - 1
            k, v = torch.einsum("kbtc,kdc->kbtd", x, p["key_value"]).split(C, dim=3)  # [K, B, T, C] each
            x_q = x[:, :, -1:] if last else x
            q = torch.einsum("kbtc,kdc->kbtd", x_q, p["query"])  # [K, B, Tq, C]
            q, k, v = (t.reshape(K * B, t.shape[2], H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=not last)  # [K*B, H, Tq, C/H]
            y = y.transpose(1, 2).reshape(K, B, x_q.shape[2], C)
            x = x_q + torch.einsum("kbtc,kdc->kbtd", y, p["proj"])
            h = F.relu(torch.einsum("kbtc,kmc->kbtm", x, p["fc_in"]) + p["fc_in_bias"][:, None, None])
            x = x + torch.einsum("kbtm,kcm->kbtc", h, p["fc_out"]) + p["fc_out_bias"][:, None, None]
        return torch.einsum("kbc,knc->kbn", x[:, :, -1], self.unembed)  # [K, B, n_classes]

    def member(self, k: int) -> Transformer:
        """Member k as a standalone ``Transformer`` (a copy: training the ensemble does not change it)."""
        K, V, C = self.embed.shape
        net = Transformer(V, self.unembed.shape[1], n_ctx=self.pos_embed.shape[1], n_layers=self.n_layers, d_model=C,
                          n_heads=self.n_heads, d_mlp=self.blocks[0]["fc_in"].shape[1])
        net.load_state_dict(self.member_state_dict(k))
        return net.to(self.embed.device)

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters under a single ``Transformer``'s names."""
        state = {"embed.weight": self.embed[k], "pos_embed.weight": self.pos_embed[k], "unembed.weight": self.unembed[k]}
        for i, p in enumerate(self.blocks):
            state.update({f"blocks.{i}.{path}": p[name][k] for name, path in _BLOCK})
        return {name: t.detach().clone() for name, t in state.items()}


class EnsembleNetwork(nn.Module):
    """K networks of one architecture, stacked: tokens [K, B, T] -> logits [K, B, n_classes] by
    ``torch.func.vmap`` over the members' parameters. Any network without buffers works (the MLP, LayerNorm
    transformers); the paper's transformer has the faster ``EnsembleTransformer``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        first = members[0]
        shapes = {name: p.shape for name, p in first.named_parameters()}
        for m in members:
            if type(m) is not type(first) or {n: p.shape for n, p in m.named_parameters()} != shapes:
                raise ValueError("ensemble members must be networks of one architecture and size.")
            if any(True for _ in m.buffers()):
                raise ValueError(f"ensembles take networks without buffers; {type(m).__name__} has some.")
        self.names = list(shapes)
        self.stacked = nn.ParameterDict({name.replace(".", "__"): nn.Parameter(torch.stack(
            [dict(m.named_parameters())[name].detach().clone() for m in members])) for name in self.names})
        object.__setattr__(self, "_template", copy.deepcopy(first).to("meta"))  # the architecture, not a submodule

    @property
    def n_members(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def forward(self, tokens: Tensor) -> Tensor:
        params = {name: self.stacked[name.replace(".", "__")] for name in self.names}
        return vmap(lambda p, x: functional_call(self._template, p, (x,)))(params, tokens)

    def member(self, k: int) -> nn.Module:
        """Member k as a standalone network (a copy)."""
        net = copy.deepcopy(self._template).to_empty(device=next(iter(self.stacked.values())).device)
        net.load_state_dict(self.member_state_dict(k))
        return net

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters under the single network's names."""
        return {name: self.stacked[name.replace(".", "__")][k].detach().clone() for name in self.names}


def stack_networks(members: Sequence[nn.Module]) -> nn.Module:
    """K initialised networks as one: ``EnsembleTransformer`` for the paper's transformer, else ``EnsembleNetwork``."""
    if all(type(m) is Transformer and isinstance(m.ln_final, nn.Identity) for m in members):
        return EnsembleTransformer(members)
    return EnsembleNetwork(members)


def member_loss(logits: Tensor, answers: Tensor, mask: Tensor, loss_dtype: torch.dtype = torch.float64) -> Tensor:
    """Each member's mean cross-entropy over its own examples: logits [K, B, N], answers, mask [K, B] -> [K]."""
    per_example = F.cross_entropy(logits.to(loss_dtype).transpose(1, 2), answers, reduction="none")  # [K, B]
    return (per_example * mask).sum(1) / mask.sum(1)


def padded_batch(tokens: Tensor, answers: Tensor, member_indices: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Gathers each member's rows by index, padded to the longest: tokens [K, B, 3], answers [K, B], mask [K, B].

    ``answers`` is [N] (shared labels) or [K, N] (per-member labels, e.g. random labels); padding repeats
    row 0 and is masked out of the loss.
    """
    longest = max(len(i) for i in member_indices)
    index = torch.zeros(len(member_indices), longest, dtype=torch.long, device=tokens.device)
    mask = torch.zeros(len(member_indices), longest, dtype=torch.float64, device=tokens.device)
    for k, rows in enumerate(member_indices):
        index[k, : len(rows)], mask[k, : len(rows)] = rows.to(tokens.device), 1.0
    labels = answers[index] if answers.dim() == 1 else answers.gather(1, index)
    return tokens[index], labels, mask


class EnsembleAdamW(torch.optim.Optimizer):
    """AdamW on parameters whose first dimension is the member, with a learning rate and weight decay per
    member (tensors of length K); the arithmetic is torch.optim.AdamW's, member by member.

    Every parameter is handled at once as one [K, N] matrix (N: one member's parameter count): a step is
    about fifteen tensor operations whatever the number of parameters, which matters where kernel launches
    dominate (small models on a GPU). The moments live in that layout, in the first parameter's state.
    """

    def __init__(self, params, lr: Tensor, weight_decay: Tensor, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:  # Lightning computes the loss and gradients inside the closure
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            k = params[0].shape[0]
            weights = torch.cat([p.reshape(k, -1) for p in params], 1)  # [K, N]
            grads = torch.cat([p.grad.reshape(k, -1) for p in params], 1)
            state = self.state[params[0]]
            if not state:
                state["step"] = 0
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(weights), torch.zeros_like(weights)
            state["step"] += 1
            lr = group["lr"].to(weights)[:, None]  # [K, 1]
            weights.mul_(1 - lr * group["weight_decay"].to(weights)[:, None])
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grads, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
            bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
            update = exp_avg_sq.sqrt().div_(math.sqrt(bias2)).add_(group["eps"])  # the denominator, then in place
            weights.sub_(torch.div(exp_avg, update, out=update).mul_(lr / bias1))  # lr / bias1 * exp_avg / denominator
            torch._foreach_copy_(params, [w.view_as(p) for w, p in zip(weights.split([p[0].numel() for p in params], 1), params)])
        return loss
