"""The one place lit_grok reaches into Lightning's loops: making a changed dataset reach the fit loop, the
step at which Lightning logs what a validation measured, ModelCheckpoint's save interval, and what the step
engine (``lit_grok.engine``) changes: when a validation runs, the logging step after a batch of several
optimiser steps, and ``max_epochs`` counted as steps.

Lightning 2.x has no public "reload the dataloaders now" (pytorch-lightning issues #17327, #21448). Its fit
and evaluation loops rebuild their loaders at the next epoch start when their cached ``_combined_loader`` is
None; ``reload_dataloaders_every_n_epochs=1`` would do the same every epoch (every step here). Tests
(tests/test_dataset_swap.py, tests/test_engine.py) fail if a Lightning upgrade renames these attributes.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


def save_intervals(trainer: pl.Trainer) -> list[int]:
    """The ``every_n_train_steps`` of each step-triggered ModelCheckpoint (Lightning keeps it private)."""
    return [c._every_n_train_steps for c in trainer.callbacks
            if isinstance(c, ModelCheckpoint) and c._every_n_train_steps > 0]


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


def set_logging_step(trainer: pl.Trainer) -> None:
    """Lightning advances its logging step once per batch (then logs a validation after N steps at N - 1);
    after a batch of several optimiser steps the engine sets it to where one step per batch would have it.
    Set from ``global_step`` rather than advanced, it stays right after any resume (a run restored from a
    checkpoint written at a validation came back one step short when advanced)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step - 1


def validate_every(trainer: pl.Trainer, steps: int) -> None:
    """Lightning decides after each batch whether to validate, by epoch (``(epoch + 1) % every == 0``); the
    engine's batches hold several optimiser steps, so this makes the decision "after every ``steps``
    optimiser steps" (and, as Lightning's, when a callback stops the run). The same decision tells a resumed
    run that its checkpoint came after a validation, so that validation is not run twice."""
    def should_check_val(data_fetcher: Any = None) -> bool:
        if not trainer.enable_validation:
            return False
        if trainer.should_stop and trainer.fit_loop._can_stop_early:
            return True
        return trainer.global_step % steps == 0

    trainer.fit_loop.epoch_loop._should_check_val_fx = should_check_val


def validate_by_epoch(trainer: pl.Trainer) -> None:
    """Lightning's own decision again (the trainer as it was given)."""
    vars(trainer.fit_loop.epoch_loop).pop("_should_check_val_fx", None)


def validates_after_this_batch(trainer: pl.Trainer) -> bool:
    """Whether the fit loop runs a validation right after the batch now ending (as decided by Lightning, or
    by ``validate_every``), with at least one validation batch to run."""
    loop = trainer.fit_loop.epoch_loop
    if not trainer.enable_validation:
        return False
    batches = trainer.num_val_batches
    if not (sum(batches) > 0 if isinstance(batches, list) else batches > 0):
        return False
    if "_should_check_val_fx" in vars(loop):
        return loop._should_check_val_fx()
    every = trainer.check_val_every_n_epoch
    return loop.batch_progress.is_last_batch and (every is None or (trainer.current_epoch + 1) % every == 0)


def count_epochs_as_steps(trainer: pl.Trainer) -> None:
    """``max_epochs`` as a number of optimiser steps (full batch: one pass over the data is one step), so
    that it means the same whether a batch holds one step or several."""
    loop = trainer.fit_loop
    if loop.max_epochs is None or loop.max_epochs < 0:
        return
    steps = loop.max_epochs if loop.max_steps is None or loop.max_steps < 0 else min(loop.max_epochs, loop.max_steps)
    loop.epoch_loop.max_steps, loop.max_epochs = steps, -1


def fork_safe_threads(trainer: pl.Trainer) -> None:
    """One torch thread in a CPU rank started by ``fork`` (``strategy: ddp_fork``).

    torch's OpenMP thread pool does not survive ``fork``: a forked child that enters a parallel region with
    more than one thread waits forever for workers that were never copied. Lightning's launcher sets the
    children's threads only when ``OMP_NUM_THREADS`` is unset, so with it exported (``OMP_NUM_THREADS=2``)
    every rank kept the parent's count and the first matmul hung. With one thread torch runs inline.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if (getattr(launcher, "_start_method", None) == "fork" and trainer.world_size > 1
            and trainer.strategy.root_device.type == "cpu"):
        import torch

        torch.set_num_threads(1)
