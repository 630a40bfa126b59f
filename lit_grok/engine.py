"""The step engine: a full-batch run takes many optimiser steps inside one Lightning batch.

With full batch, one Lightning batch was one optimiser step, and Lightning's per-batch work (hooks, loop
bookkeeping, about 1 ms on a CPU) was paid at every step. The engine runs the steps from one event to the
next inside ``training_step`` (manual optimisation), so that work is paid once per batch while
``trainer.global_step`` still counts optimiser steps. A batch ends at every step where something keyed to
steps happens, so everything keeps its meaning:

- a validation every ``check_val_every_n_epoch`` steps (an epoch is one pass over the data: one step in
  full batch), ``max_steps`` (and ``max_epochs``, counted as steps);
- saves of every ``ModelCheckpoint(every_n_train_steps=N)``, and any callback's ``event_steps()`` (e.g.
  ``DatasetSwap(at_step)``);
- at most ``MAX_STEPS_PER_BATCH`` steps, so that the progress bar and Ctrl-C still answer.

The steps of a batch are the same operations in the same order as one step per batch: parameters are
bit-identical (tests/test_engine.py). Under the engine Lightning's ``current_epoch`` counts batches (each of
one or more steps); nothing in lit_grok reads it in full batch. Minibatch runs keep one step per batch, and
so does a full-batch run that validates by ``val_check_interval`` (``check_val_every_n_epoch: null``).

Each step is also direct where nothing can tell the difference (``direct_steps``): on one device, at a
precision that only calls backward and step, with no callback or profiler watching the per-step hooks, the
engine calls ``loss.backward()``, the module's ``on_before_optimizer_step`` (gradient filters) and the torch
optimiser's ``step`` itself, and counts the step as Lightning's optimiser wrapper does. That skips Lightning's
dispatch of six hooks and two wrappers per step (5-6 % of a step at P=7 and at P=31 on this CPU;
docs/benchmarks.md), with the same operations in the same order. Anything else (DDP, mixed precision, a callback with
``on_after_backward``) takes Lightning's path.
"""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy, Strategy
from torch import Tensor

from lit_grok.loops import (count_epochs_as_steps, fork_safe_threads, save_intervals, set_logging_step, validate_by_epoch,
                            validate_every)

MAX_STEPS_PER_BATCH = 100


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def steps_to_next_event(trainer: pl.Trainer, val_every: Optional[int]) -> int:
    """How many optimiser steps the next batch takes: up to the nearest step at which a validation, a save,
    a callback's event or the end of training is due (at least 1, at most ``MAX_STEPS_PER_BATCH``)."""
    step = trainer.global_step
    ends = [step + MAX_STEPS_PER_BATCH]
    if val_every:
        ends.append(_next_multiple(step, val_every))
    if trainer.max_steps is not None and trainer.max_steps > 0:
        ends.append(trainer.max_steps)
    ends.extend(_next_multiple(step, every) for every in save_intervals(trainer))
    for callback in trainer.callbacks:
        ends.extend(s for s in getattr(callback, "event_steps", tuple)() if s > step)
    return max(1, min(ends) - step)


# What Lightning does around a manual step, by whom: the engine's direct steps do it themselves only where every
# one of these is Lightning's own (the strategy and precision pass backward and step through, no hooks watch)
_STRATEGY_PATH = ("backward", "pre_backward", "post_backward", "optimizer_step")
_PRECISION_PATH = ("pre_backward", "backward", "post_backward", "optimizer_step", "_wrap_closure", "_after_closure")
_STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def direct_steps(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """Whether the engine may take its optimiser steps without Lightning's per-step dispatch and compute the
    same: one device, a precision plugin and strategy that only call backward and step, no callback with a
    per-step hook, no module backward or backward hooks of its own, no profiler."""
    strategy, precision = trainer.strategy, trainer.precision_plugin
    return (isinstance(strategy, SingleDeviceStrategy)
            and all(getattr(type(strategy), name) is getattr(Strategy, name) for name in _STRATEGY_PATH)
            and all(getattr(type(precision), name) is getattr(Precision, name) for name in _PRECISION_PATH)
            and not any(getattr(type(callback), hook) is not getattr(pl.Callback, hook)
                        for callback in trainer.callbacks for hook in _STEP_HOOKS)
            and all(getattr(type(module), name) is getattr(pl.LightningModule, name)
                    for name in ("backward", "on_before_backward", "on_after_backward"))
            and isinstance(trainer.profiler, PassThroughProfiler))


class StepEngine:
    """LightningModule mixin (the module sets ``automatic_optimization = False``): manual optimisation running ``steps_to_next_event`` steps of ``training_loss``
    per full batch (one per batch in minibatch mode), with the module's learning-rate scheduler stepped
    after each optimiser step, as Lightning's ``interval: step`` would."""

    _val_every: Optional[int] = None
    _many_steps = False
    _direct = False

    def training_loss(self, batch: Any) -> Tensor:
        """The loss whose gradient one optimiser step follows."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        """In each rank, before anything trains: a forked CPU rank gets one thread (``loops.fork_safe_threads``)."""
        if self._trainer is not None:
            fork_safe_threads(self.trainer)
        super().setup(stage)  # type: ignore[misc]

    def setup_engine(self, trainer: pl.Trainer) -> None:
        """In full batch: validations every ``check_val_every_n_epoch`` optimiser steps (none when validation
        is off), ``max_epochs`` as steps."""
        full_batch = trainer.num_training_batches == 1
        every = trainer.check_val_every_n_epoch if trainer.enable_validation else None
        # validation by val_check_interval (check_val_every_n_epoch: null) counts batches: one step each
        self._many_steps = full_batch and (every is not None or not trainer.enable_validation)
        self._val_every = every if self._many_steps else None
        if full_batch:
            count_epochs_as_steps(trainer)
        if self._val_every is not None:
            validate_every(trainer, self._val_every)
        self._direct = direct_steps(trainer, self)  # type: ignore[arg-type]

    def on_train_start(self) -> None:
        self.setup_engine(self.trainer)  # type: ignore[attr-defined]

    def on_fit_end(self) -> None:
        validate_by_epoch(self.trainer)  # type: ignore[attr-defined]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        trainer: pl.Trainer = self.trainer  # type: ignore[attr-defined]
        optimizer = self.optimizers()  # type: ignore[attr-defined]
        scheduler = self.lr_schedulers()  # type: ignore[attr-defined]
        steps = steps_to_next_event(trainer, self._val_every) if self._many_steps else 1
        for _ in range(steps):
            optimizer.zero_grad()
            if self._direct:  # what Lightning's manual_backward and optimizer.step do here, without the dispatch
                self.training_loss(batch).backward()
                optimizer._on_before_step()  # counts the step (trainer.global_step), as LightningOptimizer.step
                self.on_before_optimizer_step(optimizer.optimizer)  # type: ignore[attr-defined]
                optimizer.optimizer.step()
                optimizer._on_after_step()
            else:
                self.manual_backward(self.training_loss(batch))  # type: ignore[attr-defined]
                optimizer.step()
            if hasattr(self, "after_optimizer_step"):  # a constraint on the parameters (lit_grok.optim)
                self.after_optimizer_step(optimizer.optimizer)
            if scheduler is not None:
                scheduler.step()
        set_logging_step(trainer)
