"""A run's result (final metrics, step, what its reporting callbacks say): as a record (``run_record``, the
same facts for a single run's result.json as for a sweep's), as the lines a run ends with (``summary_lines``),
and as JSON for a sweep that launched the run in a process of its own (``RunResult``: a DDP run's launcher
starts the other ranks from that process's command line)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

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


def run_record(trainer: pl.Trainer) -> dict[str, Any]:
    """A finished single run's final metrics, step and callback summaries; an ensemble's, one per member."""
    members = next((c for c in trainer.callbacks if hasattr(c, "results") and hasattr(c, "log_dirs")), None)
    if members is not None:
        return {"members": [{**metrics, "step": step, "log_dir": log_dir, **summaries(mine)} for (metrics, step), mine,
                            log_dir in zip(members.results(trainer), members.callbacks, members.log_dirs or itertools.repeat(None))],
                "step": trainer.global_step}
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items())}
    return {**metrics, "step": trainer.global_step, **summaries(trainer.callbacks)}


def _step(value: Any) -> Optional[int]:
    return None if value is None or int(value) < 0 else int(value)


def outcome(record: dict[str, Any], max_steps: int) -> str:
    """One line of what a run did: memorised, grokked (or not by its last step), how it stopped, plateaus."""
    step = int(record["step"])
    parts = []
    if "events/memorised_step" in record:
        memorised, grokked = _step(record["events/memorised_step"]), _step(record["events/grokked_step"])
        parts.append(f"memorised at step {memorised}" if memorised is not None else f"not memorised by step {step}")
        parts.append(f"grokked at step {grokked}" if grokked is not None else f"not grokked by step {step}")
    accuracies = [f"{name} {record[name]:.3f}" for name in ("train/acc", "val/acc") if name in record]
    if accuracies:
        parts.append(", ".join(accuracies) + f" at step {step}")
    if record.get("diverged"):
        parts.append(f"diverged at step {record.get('events/diverged_step')}")
    elif _step(record.get("events/converged_step")) is not None:
        parts.append(f"converged at step {record['events/converged_step']}")
    elif max_steps > 0 and step >= max_steps:
        parts.append(f"stopped at max_steps={max_steps}")
    else:
        parts.append(f"stopped early at step {step}")
    if record.get("plateaus"):
        parts.append(f"{record['plateaus']} plateau(s), the longest at val/acc {record['events/plateau_level']:.2f} for "
                     f"{record['events/plateau_length']} steps")
    elif "plateaus" in record:
        parts.append("no plateau")
    if record.get("slingshots"):
        parts.append(f"{record['slingshots']} slingshot(s), the largest {record['events/slingshot_orders']:.1f} "
                     f"orders of magnitude at step {record['events/slingshot_step']}")
    return "; ".join(parts)


def summary_lines(record: dict[str, Any], log_dir: Optional[str], max_steps: int) -> list[str]:
    """What a run ends with: where it is, what happened, where its figure is."""
    lines = [f"run: {log_dir}" if log_dir else "run: not logged (no logger)"]
    if "members" in record:
        for k, member in enumerate(record["members"]):
            lines.append(f"  member {k}: {outcome(member, max_steps)}")
    else:
        lines.append(f"  {outcome(record, max_steps)}")
    if log_dir:
        figure = Path(log_dir) / "curves.png"
        lines.append(f"  {'curves: ' + str(figure) + '; ' if figure.is_file() else ''}"
                     f"result.json there; tensorboard --logdir {Path(log_dir).parent}")
    return lines
