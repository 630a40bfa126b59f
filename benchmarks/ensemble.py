"""Throughput of K members trained together (EnsembleModule) against K single runs one after another, both on
lit_grok's Trainer path, printed as member-step ratios in one run.

Members are transformers on modular addition, full batch, AdamW, validation off, each member its own
training set of the same size. K sequential single runs process (single steps/s) member-steps per second
whatever K is; K members together process K x (ensemble steps/s). The ratio is printed; K would be perfect
batching. Settings: width 32 and the paper's width 128 at P=23 (D=159), and the paper's model at P=113
(D=3830). Steady state only: the first WARMUP steps are not timed.

    python benchmarks/ensemble.py                       # CPU
    python benchmarks/ensemble.py --accelerator gpu     # one GPU
"""

from __future__ import annotations

import argparse
import platform
import sys
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.throughput
from benchmarks.throughput import WARMUP, _Clock, lit_grok_steps_per_s
from lit_grok import ModularArithmeticDataModule, Transformer
from lit_grok.runs import quiet_lightning_warnings
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule


def ensemble_steps_per_s(k: int, modulus: int, train_size: int, steps: int, accelerator: str = "cpu",
                         **net: int) -> float:
    """Steps/s of K members (seeds and data seeds 0..K-1) on the Trainer; ``net`` overrides the sizes."""
    data = EnsembleDataModule("add", modulus, [train_size] * k, data_seeds=list(range(k)))
    model = EnsembleModule(data.vocab_size, data.n_classes, k, network=partial(Transformer, **net))
    clock = _Clock()
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(model, data)
    return (steps - WARMUP) / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement at P=113 (x10 at P=23)")
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64], help="ensemble sizes")
    args = parser.parse_args()
    quiet_lightning_warnings()
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else \
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    print(f"torch {torch.__version__}, {device}")
    print(f"{'setting':<16}{'K':>4}{'single step/s':>15}{'ensemble step/s':>17}{'member-steps ratio':>20}")
    tiny = dict(d_model=32, n_heads=4, d_mlp=128)
    settings = ((23, 159, tiny, args.steps * 10), (23, 159, {}, args.steps * 10), (113, 3830, {}, args.steps))
    for modulus, train_size, net, steps in settings:
        data = ModularArithmeticDataModule("add", modulus, train_size=train_size)
        single = lit_grok_steps_per_s(data, steps, args.accelerator, **net)
        name = f"P={modulus} d={net.get('d_model', 128)}"
        for k in args.ks:
            together = ensemble_steps_per_s(k, modulus, train_size, steps, args.accelerator, **net)
            print(f"{name:<16}{k:>4}{single:>15.1f}{together:>17.2f}"
                  f"{k * together / single:>16.2f} = {k * together / single / k:.2f} K", flush=True)


if __name__ == "__main__":
    main()
