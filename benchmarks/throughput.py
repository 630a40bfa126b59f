"""Steps/s of lit_grok's Trainer path against a plain PyTorch loop of the same model, alternated in one run.

The plain loop is written the straightforward way: every position computed, no Lightning. Both train the
paper's model full-batch with AdamW and a float64 loss; evaluation is off in both (it is every 100 steps in
real runs). Steady state only: the first WARMUP steps of each run are not timed.

    python benchmarks/throughput.py            # P=113 (D=3830) and P=23 (D=159)
    python benchmarks/throughput.py --steps 100 --rounds 2
"""

from __future__ import annotations

import argparse
from functools import partial
import platform
import statistics
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.runs import quiet_lightning_warnings

WARMUP = 5


class _Clock(pl.Callback):
    """Times optimiser steps WARMUP.. end, Lightning's per-step work included."""

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == WARMUP:
            _sync()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, *args) -> None:
        _sync()
        self.seconds = time.perf_counter() - self.start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def lit_grok_steps_per_s(data: ModularArithmeticDataModule, steps: int, accelerator: str = "cpu",
                         **net: int) -> float:
    """Steps/s of GrokkingModule on the Trainer; ``net`` overrides the Transformer's sizes."""
    torch.manual_seed(0)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **net))
    clock = _Clock()
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(model, data)
    return (steps - WARMUP) / clock.seconds


def plain_steps_per_s(data: ModularArithmeticDataModule, steps: int, device: str = "cpu") -> float:
    torch.manual_seed(0)
    model = Transformer(data.vocab_size, data.n_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    tokens, answers = data.tokens[data.train_indices].to(device), data.answers[data.train_indices].to(device)
    for step in range(steps):
        if step == WARMUP:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
        logits = model(tokens, all_positions=True)[:, -1]  # [D, P]
        loss = F.cross_entropy(logits.double(), answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return (steps - WARMUP) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two paths (median reported)")
    args = parser.parse_args()
    quiet_lightning_warnings()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'setting':<18}{'lit_grok step/s':>16}{'plain step/s':>14}{'ratio':>8}")
    for modulus, train_size, steps in ((113, 3830, args.steps), (23, 159, args.steps * 10)):
        data = ModularArithmeticDataModule("add", modulus, train_size=train_size)
        ours, plain = [], []
        for _ in range(args.rounds):
            ours.append(lit_grok_steps_per_s(data, steps))
            plain.append(plain_steps_per_s(data, steps))
        a, b = statistics.median(ours), statistics.median(plain)
        print(f"{f'P={modulus} D={train_size}':<18}{a:>16.1f}{b:>14.1f}{a / b:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
