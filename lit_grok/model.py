"""The networks: plain nn.Modules, no Lightning. Each maps tokens [B, T] to answer logits [B, n_classes].

Transformer follows Nanda et al. (2023) and the paper: decoder-only, learned positional embeddings,
untied embedding/unembedding, ReLU MLP, no LayerNorm unless asked for. Only the last position feeds
the loss, so the last layer computes its query, MLP and unembedding for that position alone (keys
and values still come from every position); ``all_positions=True`` computes everything.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Causal multi-head self-attention without biases (as in Nanda et al.)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}).")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key_value = nn.Linear(d_model, 2 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        B, T, C = x.shape
        H = self.n_heads
        k, v = self.key_value(x).split(C, dim=2)  # every position: [B, T, C] each
        q = self.query(x[:, -1:] if last_only else x)  # [B, T_q, C], T_q = 1 or T
        q, k, v = (t.reshape(B, t.shape[1], H, C // H).transpose(1, 2) for t in (q, k, v))  # [B, H, T_, C/H]
        # The last position sees every key, so it needs no mask; full computation is causal.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only)  # [B, H, T_q, C/H]
        return self.proj(y.transpose(1, 2).reshape(B, q.shape[2], C))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp)
        self.fc_out = nn.Linear(d_mlp, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(F.relu(self.fc_in(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, layer_norm: bool) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = Attention(d_model, n_heads)
        self.ln_mlp = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.mlp = FeedForward(d_model, d_mlp)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        # x: [B, T, C] -> [B, 1, C] when last_only, else [B, T, C]
        x = (x[:, -1:] if last_only else x) + self.attn(self.ln_attn(x), last_only)
        return x + self.mlp(self.ln_mlp(x))


class Transformer(nn.Module):
    """The paper's model: defaults are its 1 layer, d_model 128, 4 heads of 32, d_mlp 512."""

    def __init__(self, vocab_size: int, n_classes: int, n_ctx: int = 3, n_layers: int = 1, d_model: int = 128,
                 n_heads: int = 4, d_mlp: int = 512, layer_norm: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp, layer_norm) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.unembed = nn.Linear(d_model, n_classes, bias=False)
        # Nanda et al.'s initialisation: N(0, 1/d_model) everywhere, N(0, 1/n_classes) for the unembedding.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, std=1 / math.sqrt(n_classes if name == "unembed.weight" else d_model))

    def forward(self, tokens: Tensor, all_positions: bool = False) -> Tensor:
        """tokens [B, T] -> logits [B, n_classes] at the last position, or [B, T, n_classes] if all_positions."""
        x = self.embed(tokens) + self.pos_embed.weight[: tokens.shape[1]]  # [B, T, C]
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=not all_positions and i == len(self.blocks) - 1)
        logits = self.unembed(self.ln_final(x))  # [B, T or 1, n_classes]
        return logits if all_positions else logits[:, -1]


class PreLNBlock(nn.Module):
    """One block of PreLNDecoder: LayerNorm, causal attention (torch's, with biases), a GELU MLP of 4x."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x: [B, T, C] -> [B, T, C]; mask: [T, T], -inf above the diagonal (causal)
        x = self.ln_1(x)  # as the reference code: the residual stream continues from the normalised x
        x = x + self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class PreLNDecoder(nn.Module):
    """The decoder of Power et al. (2022) as Grokfast's code (Lee et al. 2024) trains it: 2 layers of width
    128 and 4 heads, LayerNorm before attention and MLP and at the end, torch's default initialisation, a
    head without bias. With ``vocab_head`` the head scores every input token, not only the answers (as that
    code does: its softmax also covers "=" and "op"). Feed it the 4-token ``a op b =`` format
    (``ModularArithmeticDataModule(op_token=True)``); ``n_ctx`` is 5 there (one position is never used)."""

    def __init__(self, vocab_size: int, n_classes: int, n_ctx: int = 5, n_layers: int = 2, d_model: int = 128,
                 n_heads: int = 4, vocab_head: bool = False) -> None:
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.position_embeddings = nn.Embedding(n_ctx, d_model)
        self.layers = nn.ModuleList(PreLNBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size if vocab_head else n_classes, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] -> logits [B, n_classes] (or [B, vocab_size] with vocab_head) at the last position."""
        T = tokens.shape[1]
        x = self.token_embeddings(tokens) + self.position_embeddings.weight[:T]  # [B, T, C]
        mask = torch.triu(torch.full((T, T), float("-inf"), device=x.device, dtype=x.dtype), diagonal=1)  # causal
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.ln_f(x[:, -1]))  # [B, n_classes or vocab_size]


class MLP(nn.Module):
    """A non-transformer baseline: token embeddings concatenated, then ReLU hidden layers."""

    def __init__(self, vocab_size: int, n_classes: int, n_ctx: int = 3, d_embed: int = 128,
                 hidden: tuple[int, ...] = (512,)) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_embed)
        widths = [n_ctx * d_embed, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.unembed = nn.Linear(widths[-1], n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] -> logits [B, n_classes]."""
        x = self.embed(tokens).flatten(1)  # [B, T * d_embed]
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.unembed(x)


class OneHotMLP(nn.Module):
    """Prieto et al.'s MLP (2025): each operand one-hot encoded and concatenated, ReLU hidden layers, no biases;
    no embedding, so the first layer's columns are the operands' embeddings."""

    def __init__(self, vocab_size: int, n_classes: int, operands: tuple[int, ...] = (0, 1),
                 n_symbols: Optional[int] = None, hidden: tuple[int, ...] = (200, 200), bias: bool = False) -> None:
        super().__init__()
        self.operands, self.n_symbols = list(operands), n_symbols or n_classes  # operand tokens are 0..n_symbols-1
        widths = [len(self.operands) * self.n_symbols, *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(widths[:-1], widths[1:]))
        self._checked = False

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] -> logits [B, n_classes]."""
        x = tokens[:, self.operands]  # [B, n_operands]
        if not self._checked:  # once: a token outside the one-hot range would fail deep inside torch
            if int(x.max()) >= self.n_symbols or int(x.min()) < 0:
                raise ValueError(f"OneHotMLP encodes operand tokens 0..{self.n_symbols - 1} (n_symbols), got "
                                 f"{int(x.min())}..{int(x.max())} at positions {self.operands}: set n_symbols or "
                                 f"operands to the task's format.")
            self._checked = True
        x = F.one_hot(x, self.n_symbols).flatten(1).to(self.layers[0].weight.dtype)  # [B, n_operands * n_symbols]
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))  # [B, hidden]
        return self.layers[-1](x)  # [B, n_classes]

