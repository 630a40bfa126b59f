"""Throughput of K members trained together (lit_grok.ensemble) against K single runs one after another.

Members are transformers on modular addition (width 32 and the paper's 128 at P=23, D=159; the paper's
model at P=113, D=3830), full batch, AdamW; each member has its own training set of the same size. K sequential single runs through lit_grok's Trainer path process
(single-run steps/s) member-steps per second whatever K is; K members together process K x (ensemble
steps/s). The ratio is printed; 1.0 x K would be perfect batching. The ensemble runs in a plain loop
(it is not wired into the Trainer yet), so at small P part of its gain is Lightning's per-step cost.

    python benchmarks/ensemble.py
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from benchmarks.throughput import lit_grok_steps_per_s
from lit_grok import ModularArithmeticDataModule, Transformer
from lit_grok.cli import quiet_lightning_warnings
from lit_grok.ensemble import EnsembleAdamW, EnsembleTransformer, member_loss, padded_batch

WARMUP = 3


def ensemble_steps_per_s(k: int, modulus: int, train_size: int, steps: int, **net: int) -> float:
    datas = [ModularArithmeticDataModule("add", modulus, train_size=train_size, data_seed=i) for i in range(k)]
    nets = []
    for i in range(k):
        torch.manual_seed(i)
        nets.append(Transformer(datas[0].vocab_size, datas[0].n_classes, **net))
    ensemble = EnsembleTransformer(nets)
    optimizer = EnsembleAdamW(ensemble.parameters(), lr=torch.full((k,), 1e-3), weight_decay=torch.ones(k))
    tokens, answers, mask = padded_batch(datas[0].tokens, datas[0].answers, [d.train_indices for d in datas])
    for step in range(steps):
        if step == WARMUP:
            start = time.perf_counter()
        loss = member_loss(ensemble(tokens), answers, mask).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (steps - WARMUP) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement at P=113 (x10 at P=23)")
    args = parser.parse_args()
    quiet_lightning_warnings()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'setting':<16}{'K':>4}{'single step/s':>15}{'ensemble step/s':>17}{'member-steps ratio':>20}")
    tiny = dict(d_model=32, n_heads=4, d_mlp=128)
    settings = ((23, 159, tiny, (1, 4, 16, 64), args.steps * 10), (23, 159, {}, (1, 4, 16, 64), args.steps * 10),
                (113, 3830, {}, (1, 4, 16), args.steps))
    for modulus, train_size, net, ks, steps in settings:
        single = lit_grok_steps_per_s(ModularArithmeticDataModule("add", modulus, train_size=train_size), steps, **net)
        name = f"P={modulus} d={net.get('d_model', 128)}"
        for k in ks:
            together = ensemble_steps_per_s(k, modulus, train_size, steps, **net)
            print(f"{name:<16}{k:>4}{single:>15.1f}{together:>17.2f}"
                  f"{k * together / single:>16.2f} = {k * together / single / k:.2f} K", flush=True)


if __name__ == "__main__":
    main()
