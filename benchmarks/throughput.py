"""Steps/s of lit_grok's Trainer path against plain PyTorch loops of the same model, alternated in one run.

Rows: the paper's model at P=113 (D=3830), a width-64 model at P=31 (D=300), and a width-8 model at P=7
(D=30) whose step is so small that what remains is the framework's cost per step; full batch, AdamW, float64
loss, evaluation off in every path (it is every 100 steps in real runs). Columns:

- ``lit_grok``: the Trainer with the step engine (many optimiser steps per Lightning batch, each step
  direct: ``engine.direct_steps``, fused AdamW);
- ``dispatched``: the same with each step through Lightning's ``manual_backward`` and optimiser wrapper (what
  a run with a per-step callback hook, DDP or mixed precision takes);
- ``1 step/batch``: the same with one optimiser step per Lightning batch (Lightning's cost on every step);
- ``plain fused``: a raw eager loop of the same network (last position only) with the same fused AdamW as
  lit_grok's: the like-for-like comparison, what the framework itself costs or saves;
- ``plain``: the same loop with torch's default AdamW (unfused foreach on CPU), as most people write it;
- ``plain all pos.``: the straightforward loop, every position computed, default AdamW.

Steady state only: the first WARMUP steps of each run are not timed. The last column is lit_grok's cost per
step over the plain fused loop, in microseconds (negative: faster).

    python benchmarks/throughput.py                 # CPU
    python benchmarks/throughput.py --rounds 5 --steps 400
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial
from unittest import mock

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer, engine
from lit_grok.runs import quiet_lightning

WARMUP = 5


class _Clock(pl.Callback):
    """Times optimiser steps WARMUP.. end, Lightning's per-batch work included."""

    def event_steps(self) -> list[int]:
        return [WARMUP]  # the step engine ends a batch there, so timing starts at that step

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
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(model, data)
    return (steps - WARMUP) / clock.seconds


def dispatched_steps_per_s(data: ModularArithmeticDataModule, steps: int, **net: int) -> float:
    with mock.patch.object(engine, "direct_steps", lambda *args: False):
        return lit_grok_steps_per_s(data, steps, **net)


def one_step_per_batch_steps_per_s(data: ModularArithmeticDataModule, steps: int, **net: int) -> float:
    with mock.patch.object(engine, "MAX_STEPS_PER_BATCH", 1):
        return lit_grok_steps_per_s(data, steps, **net)


def plain_steps_per_s(data: ModularArithmeticDataModule, steps: int, all_positions: bool, device: str = "cpu",
                      fused: bool = False, **net: int) -> float:
    """A raw loop: the network, AdamW (torch's default, or fused as lit_grok's), a float64 cross-entropy."""
    torch.manual_seed(0)
    model = Transformer(data.vocab_size, data.n_classes, **net).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0,
                                  **({"fused": True} if fused else {}))
    tokens, answers = data.tokens[data.train_indices].to(device), data.answers[data.train_indices].to(device)
    for step in range(steps):
        if step == WARMUP:
            _sync()
            start = time.perf_counter()
        logits = model(tokens, all_positions=True)[:, -1] if all_positions else model(tokens)  # [D, P]
        loss = F.cross_entropy(logits.double(), answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync()
    return (steps - WARMUP) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200,
                        help="optimiser steps per run at P=113 (x5 at P=31, x15 at P=7)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the paths (median reported)")
    args = parser.parse_args()
    quiet_lightning()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'setting':<20}{'lit_grok':>10}{'dispatched':>12}{'1 step/batch':>14}{'plain fused':>13}{'plain':>8}"
          f"{'plain all pos.':>16}{'vs fused':>10}{'vs plain':>10}{'vs all pos.':>13}{'cost/step':>11}   (steps/s)")
    width64, width8 = dict(d_model=64, n_heads=4, d_mlp=256), dict(d_model=8, n_heads=2, d_mlp=16)
    settings = ((7, 30, width8, args.steps * 15), (31, 300, width64, args.steps * 5), (113, 3830, {}, args.steps))
    for modulus, train_size, net, steps in settings:
        data = ModularArithmeticDataModule("add", modulus, train_size=train_size)
        paths = {"ours": lambda: lit_grok_steps_per_s(data, steps, **net),
                 "dispatched": lambda: dispatched_steps_per_s(data, steps, **net),
                 "one": lambda: one_step_per_batch_steps_per_s(data, steps, **net),
                 "fused": lambda: plain_steps_per_s(data, steps, False, fused=True, **net),
                 "plain": lambda: plain_steps_per_s(data, steps, False, **net),
                 "all": lambda: plain_steps_per_s(data, steps, True, **net)}
        runs: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, path in paths.items():
                runs[name].append(path())
        ours, dispatched, one, fused, plain, every = (statistics.median(runs[k]) for k in paths)
        setting = f"P={modulus} D={train_size}" + (f" d={net['d_model']}" if net else "")
        print(f"{setting:<20}{ours:>10.1f}{dispatched:>12.1f}{one:>14.1f}{fused:>13.1f}{plain:>8.1f}{every:>16.1f}"
              f"{ours / fused:>9.2f}x{ours / plain:>9.2f}x{ours / every:>12.2f}x{1e6 / ours - 1e6 / fused:>9.0f}us",
              flush=True)


if __name__ == "__main__":
    main()
