"""What CircuitEfficiency and ProgressMeasures cost at a validation of the paper's model at P=113, with their
forward over all P^2 pairs shared (lit_grok's) against each computing its own (the cache cleared between them),
alternated in one run; the median of ``--rounds``.

    python benchmarks/validation.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule
from lit_grok.callbacks import CircuitEfficiency, ProgressMeasures


def seconds(module: GrokkingModule, trainer: SimpleNamespace, shared: bool) -> float:
    """One validation's work of both callbacks (a new step, so nothing is cached from before)."""
    trainer.global_step += 1
    start = time.perf_counter()
    CircuitEfficiency().on_validation_epoch_end(trainer, module)
    if not shared:
        module._table_logits = None
    ProgressMeasures().on_validation_epoch_end(trainer, module)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 113, train_size=3830)
    module = GrokkingModule(data.vocab_size, data.n_classes)
    module.log = lambda *a, **k: None  # no Trainer to log into: the measures are computed, not logged
    trainer = SimpleNamespace(sanity_checking=False, datamodule=data, global_step=0)
    times: dict[bool, list[float]] = {True: [], False: []}
    seconds(module, trainer, True)  # warm-up
    for _ in range(args.rounds):
        for shared in (False, True):
            times[shared].append(seconds(module, trainer, shared))
    own, one = (statistics.median(times[k]) * 1000 for k in (False, True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: both callbacks at one validation, P=113 "
          f"(12,769 pairs): {own:.1f} ms with a forward each, {one:.1f} ms sharing one ({own / one:.2f}x)")


if __name__ == "__main__":
    main()
