"""At the end of fit, the run's accuracy and loss curves as a PNG in the run's folder and in TensorBoard."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

CURVES = ("train/acc", "val/acc", "train/loss", "val/loss")


class TrainingCurves(pl.Callback):
    """Records the evaluation metrics at every validation and plots them against step (log x, as the paper).

    The history is part of the callback's checkpoint state, so a resumed run plots its whole history.
    """

    def __init__(self, filename: str = "curves.png") -> None:
        self.filename = filename
        self.history: dict[str, list[tuple[int, float]]] = {name: [] for name in CURVES}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name in CURVES:
            if name in trainer.callback_metrics:
                self.history[name].append((trainer.global_step, float(trainer.callback_metrics[name])))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, before rank 0 goes on alone
        if not trainer.is_global_zero or not any(self.history.values()):
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.image import imsave

        # drawn once, for the PNG and TensorBoard alike (drawing is most of a short run's time at its end)
        canvas = FigureCanvasAgg(self.figure())
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3]
        if log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            imsave(os.path.join(log_dir, self.filename), image)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("curves", image, global_step=trainer.global_step, dataformats="HWC")

    def figure(self):
        """Accuracy (left) and loss (right) against step; step 0 is drawn at 1 on the log axis."""
        from matplotlib.figure import Figure  # not pyplot: the global backend (a notebook's) is left alone

        fig = Figure(figsize=(11, 4), dpi=120)
        acc_ax, loss_ax = fig.subplots(1, 2)
        for ax, stat in ((acc_ax, "acc"), (loss_ax, "loss")):
            for split, color in (("train", "tab:blue"), ("val", "tab:red")):
                points = [(s, v) for s, v in self.history[f"{split}/{stat}"] if math.isfinite(v)]  # not a NaN
                if points:
                    steps, values = zip(*points)
                    ax.plot([max(s, 1) for s in steps], values, color=color, label=split)
            ax.set_xscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel(stat)
            ax.legend()
        loss_ax.set_yscale("log")
        acc_ax.set_ylim(-0.02, 1.02)
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.97, wspace=0.2)  # fixed: no extra draw
        return fig

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {name: [tuple(p) for p in points] for name, points in state_dict["history"].items()}
