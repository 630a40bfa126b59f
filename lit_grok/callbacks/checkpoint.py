"""Lightning's ModelCheckpoint, with ``last.ckpt`` holding the final step of a run that stops between saves, and
step-triggered saves that come after the validation of their step."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    """A drop-in ``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at the end of training when the run
    stopped after its latest save (``StopOnConvergence``, ``GrokEvents(stop_after)``). Lightning 2.6 writes
    ``last.ckpt`` at train end only if it never wrote one, so a run that converged at step 4200 with saves
    every 1000 steps would leave step 4000's weights as its "last", and a branch started from it would miss
    the final 200 steps.

    A save every N steps at a step that also validates (every step of a full-batch run whose validation
    cadence divides N) waits for that validation: Lightning would write it before the validation, and a
    run resumed from it would never see that validation (its curves would miss the point, GrokEvents and
    StopOnConvergence the measurement). Lightning's own deferral (used for monitored metrics) does the save.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        if (self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
                and self._validates_after_this_batch(trainer) and not self._should_skip_saving_checkpoint(trainer)):
            self._defer_save_until_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    @staticmethod
    def _validates_after_this_batch(trainer: pl.Trainer) -> bool:
        """Whether the fit loop runs a validation right after the batch that just ended."""
        if not trainer.enable_validation or not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return False
        every = trainer.check_val_every_n_epoch
        batches = trainer.num_val_batches
        has_batches = sum(batches) > 0 if isinstance(batches, list) else batches > 0
        return has_batches and (every is None or (trainer.current_epoch + 1) % every == 0)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
