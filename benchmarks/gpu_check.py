"""One short GPU check: the environment, the paper's grokking run to its grok step with timing, lit_grok's
step rate against the plain loop, and the step time of K paper-size members trained together at P=113,
printed as one table.

    python benchmarks/gpu_check.py             # needs a CUDA device
    python benchmarks/gpu_check.py --max-steps 25000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for benchmarks.throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=25_000, help="upper bound for the grokking run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is visible to torch; run it on a GPU machine.")
    import pytorch_lightning as pl

    from benchmarks.ensemble import ensemble_steps_per_s
    from benchmarks.throughput import lit_grok_steps_per_s, plain_steps_per_s  # same two paths as on CPU
    from lit_grok import ModularArithmeticDataModule
    from lit_grok.callbacks import GrokEvents
    from lit_grok.cli import main as cli_main
    from lit_grok.runs import quiet_lightning_warnings

    quiet_lightning_warnings()
    rows = [("device", torch.cuda.get_device_name(0)), ("torch / lightning", f"{torch.__version__} / {pl.__version__}"),
            ("float32 matmul precision", torch.get_float32_matmul_precision())]
    start = time.perf_counter()
    cli = cli_main(["-c", str(ROOT / "configs/grok.yaml"), "--config", str(ROOT / "configs/trainer/gpu.yaml"),
                    f"--trainer.max_steps={args.max_steps}", "--trainer.enable_progress_bar=false",
                    "--trainer.enable_checkpointing=false", "--trainer.logger=false"], run=False)
    events = next(c for c in cli.trainer.callbacks if isinstance(c, GrokEvents))
    events.stop_after = 0
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = time.perf_counter() - start
    rows += [("configs/grok.yaml: memorised / grokked step", f"{events.memorised_step} / {events.grokked_step}"),
             ("configs/grok.yaml: wall time to grok (s)", f"{seconds:.1f}"),
             ("configs/grok.yaml: steps/s incl. validation", f"{cli.trainer.global_step / seconds:.1f}")]
    data = ModularArithmeticDataModule("add", 113, train_size=3830)
    single = lit_grok_steps_per_s(data, 500, "gpu")
    rows += [("P=113 D=3830 step/s, lit_grok (GPU, no validation)", f"{single:.1f}"),
             ("P=113 D=3830 step/s, plain loop (GPU)", f"{plain_steps_per_s(data, 500, 'cuda'):.1f}")]
    for k in (16, 64):
        together = ensemble_steps_per_s(k, 113, 3830, 200, "gpu")
        rows.append((f"P=113 D=3830 K={k} ensemble: step ms / member-steps vs single",
                     f"{1000 / together:.2f} / {k * together / single:.1f}x"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
