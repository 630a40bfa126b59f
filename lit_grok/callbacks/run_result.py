"""A run's result (final metrics, step, what its reporting callbacks say) as JSON, for a sweep that launched
the run in a process of its own (a DDP run: its launcher starts the other ranks from that process's command
line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lit_grok.callbacks.divergence import Diverged


def summaries(callbacks: list) -> dict[str, Any]:
    """What the callbacks that report on a run (GrokEvents, StopOnConvergence, DatasetSwap, PlateauDetector,
    StopOnDivergence) say of it, merged for its result row."""
    merged: dict[str, Any] = {}
    for callback in callbacks:
        if hasattr(callback, "summary"):
            merged.update(callback.summary())
    return merged


class RunResult(pl.Callback):
    """Writes ``{"metrics", "step", "summaries"}`` to ``path`` when fit ends (rank 0), or the divergence if
    it diverged. Sweeps add it to the runs they launch as ``python -m lit_grok fit`` processes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, metrics: dict[str, float], step: int, extra: dict[str, Any]) -> None:
        Path(self.path).write_text(json.dumps({"metrics": metrics, "step": step, "summaries": extra}))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}
            self._write(metrics, trainer.global_step, summaries(trainer.callbacks))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, Diverged) and trainer.is_global_zero:
            self._write({}, exception.step, {"diverged": True, "events/diverged_step": exception.step,
                                             "error": str(exception)})
