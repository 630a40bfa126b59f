"""Draws docs/simulation.png: train and test loss of the three simulation configs, from their TensorBoard logs.

    python docs/simulation_figure.py   # runs the three configs (about 20 s on a CPU), then plots
"""

from __future__ import annotations

from pathlib import Path
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_grok.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"grok": "all three ingredients", "inefficient_gen": "C_gen less efficient", "equal_speed": "equal learning speed"}


def curves(config: str, save_dir: str) -> dict[str, list[tuple[int, float]]]:
    cli = main(["fit", "-c", str(ROOT / "configs/simulation" / f"{config}.yaml"), f"--trainer.logger.init_args.save_dir={save_dir}",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    ea = EventAccumulator(cli.trainer.log_dir, size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ("sim/train_loss", "sim/test_loss")}


def main_() -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    with tempfile.TemporaryDirectory() as save_dir:
        for ax, (config, title) in zip(axes, RUNS.items()):
            for tag, color in (("sim/train_loss", "tab:blue"), ("sim/test_loss", "tab:red")):
                steps, values = zip(*curves(config, save_dir)[tag])
                ax.plot(steps, values, color=color, label=tag.split("/")[1].replace("_", " "))
            ax.set_title(f"{title}\nconfigs/simulation/{config}.yaml", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("gradient step")
    axes[0].set_ylabel("cross-entropy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "simulation.png", dpi=110)


if __name__ == "__main__":
    main_()
