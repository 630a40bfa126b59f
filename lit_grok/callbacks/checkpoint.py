"""Lightning's ModelCheckpoint, with ``last.ckpt`` holding the final step of a run that stops between saves."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """A drop-in ``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at the end of training when the run
    stopped after its latest save (``StopOnConvergence``, ``GrokEvents(stop_after)``). Lightning 2.6 writes
    ``last.ckpt`` at train end only if it never wrote one, so a run that converged at step 4200 with saves
    every 1000 steps would leave step 4000's weights as its "last", and a branch started from it would miss
    the final 200 steps.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
