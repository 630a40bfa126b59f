"""The one place lit_grok reaches into Lightning's loops: making a changed dataset reach the fit loop, and
the step at which Lightning logs what a validation measured.

Lightning 2.x has no public "reload the dataloaders now" (pytorch-lightning issues #17327, #21448). Its fit
and evaluation loops rebuild their loaders at the next epoch start when their cached ``_combined_loader`` is
None; ``reload_dataloaders_every_n_epochs=1`` would do the same every epoch (every step here). A test
(tests/test_dataset_swap.py) fails if a Lightning upgrade renames these attributes.
"""

from __future__ import annotations

import pytorch_lightning as pl


def reload_dataloaders(trainer: pl.Trainer) -> None:
    """Makes the next epoch request fresh train and validation loaders from the DataModule."""
    for loop in (trainer.fit_loop, trainer.fit_loop.epoch_loop.val_loop):
        if not hasattr(loop, "_combined_loader"):
            raise RuntimeError(f"{type(loop).__name__} has no _combined_loader: this Lightning version "
                               f"({pl.__version__}) changed how loaders are cached; update lit_grok.loops.")
        loop._combined_loader = None


def logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning gives metrics logged now (after N optimiser steps, a validation's are logged at
    N - 1), so that runs written outside its logger connector (ensemble members) line up with single runs."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped
