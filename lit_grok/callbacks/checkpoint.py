"""Lightning's ModelCheckpoint, with ``last.ckpt`` holding the final step of a run that stops between saves, and
step-triggered saves that come after the validation of their step."""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint

from lit_grok.loops import validates_after_this_batch


class ModelCheckpoint(LightningModelCheckpoint):
    """A drop-in ``ModelCheckpoint`` whose files are named by optimiser step (``step=4000.ckpt``: Lightning's
    epoch counts the step engine's batches, not passes over the data), whose ``last.ckpt`` is rewritten at the end of training when the run
    stopped after its latest save (``StopOnConvergence``, ``GrokEvents(stop_after)``). Lightning 2.6 writes
    ``last.ckpt`` at train end only if it never wrote one, so a run that converged at step 4200 with saves
    every 1000 steps would leave step 4000's weights as its "last", and a branch started from it would miss
    the final 200 steps.

    A save every N steps at a step that also validates (every step of a full-batch run whose validation
    cadence divides N) waits for that validation: Lightning would write it before the validation, and a
    run resumed from it would never see that validation (its curves would miss the point, GrokEvents and
    StopOnConvergence the measurement). Lightning's own deferral (used for monitored metrics) does the save.
    """

    def __init__(self, dirpath: Optional[str] = None, filename: Optional[str] = "{step}", **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, filename=filename, **kwargs)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        if (self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
                and validates_after_this_batch(trainer) and not self._should_skip_saving_checkpoint(trainer)):
            self._defer_save_until_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
