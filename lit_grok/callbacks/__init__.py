"""Callbacks, one per file."""

from lit_grok.callbacks.checkpoint import ModelCheckpoint
from lit_grok.callbacks.convergence import StopOnConvergence
from lit_grok.callbacks.curves import TrainingCurves
from lit_grok.callbacks.dataset_swap import DatasetSwap
from lit_grok.callbacks.divergence import Diverged, StopOnDivergence
from lit_grok.callbacks.efficiency import CircuitEfficiency
from lit_grok.callbacks.fourier import ProgressMeasures
from lit_grok.callbacks.grok_events import GrokEvents
from lit_grok.callbacks.layout import TensorBoardLayout
from lit_grok.callbacks.llc import LocalLearningCoefficient
from lit_grok.callbacks.members import Members
from lit_grok.callbacks.plateaus import PlateauDetector
from lit_grok.callbacks.progress import StepProgressBar
from lit_grok.callbacks.run_result import RunResult
from lit_grok.callbacks.slingshot import SlingshotDetector

__all__ = ["CircuitEfficiency", "DatasetSwap", "Diverged", "GrokEvents", "LocalLearningCoefficient", "Members",
           "ModelCheckpoint", "PlateauDetector", "ProgressMeasures", "RunResult", "SlingshotDetector", "StepProgressBar",
           "StopOnConvergence", "StopOnDivergence", "TensorBoardLayout", "TrainingCurves"]
