"""Callbacks, one per file."""

from lit_grok.callbacks.curves import TrainingCurves
from lit_grok.callbacks.progress import StepProgressBar

__all__ = ["StepProgressBar", "TrainingCurves"]
