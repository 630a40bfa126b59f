"""TensorBoard's custom-scalars layout for every run: the charts a researcher compares, each with its curves
together (the grokking plot itself: train and val accuracy on one chart), on the CUSTOM SCALARS tab."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

# category -> chart title -> the tags (regular expressions) drawn on it together
LAYOUT: dict[str, dict[str, list[str]]] = {
    "grokking": {
        "accuracy: train and val": ["train/acc$", "val/acc$"],
        "loss: train and val": ["train/loss$", "val/loss$"],
    },
    "circuits": {
        "logits: C_gen and C_mem (App. B)": ["circuits/gen_logit$", "circuits/mem_logit_train$", "circuits/mem_logit_val$"],
        "parameter norm": ["norm/params$"],
        "efficiency: train and val": ["efficiency/train$", "efficiency/val$"],
    },
    "ensemble": {  # an ensemble's own run (each member's run has the charts above, side by side in TensorBoard)
        "members' mean accuracy: train and val": ["members/train_acc$", "members/val_acc$"],
    },
}


class TensorBoardLayout(pl.Callback):
    """Writes ``LAYOUT`` to each TensorBoard logger of the run once, when fit starts (an ensemble member's
    to the member's own run; TensorBoard merges the layouts of every run under its logdir). Charts whose
    tags a run does not log stay empty."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        layout = {category: {title: ["Multiline", tags] for title, tags in charts.items()}
                  for category, charts in LAYOUT.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout)
