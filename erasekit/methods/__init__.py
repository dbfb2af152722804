"""Erasure methods: the registry, the shared loop, and one module per method (imported here to register)."""

from . import doco, esd, salun, text_to_unlearn, uce  # noqa: F401  (register the methods)
from .base import EraseMethod, get_method, list_methods, register_method
from .callbacks import Callback, Checkpointer, LossHistory, ProgressBar
from .config import MethodConfig, RunConfig, TrainingConfig, option
from .loop import NonFiniteError, TrainedMethod, TrainState

__all__ = [
    "Callback",
    "Checkpointer",
    "EraseMethod",
    "LossHistory",
    "MethodConfig",
    "NonFiniteError",
    "ProgressBar",
    "RunConfig",
    "TrainState",
    "TrainedMethod",
    "TrainingConfig",
    "get_method",
    "list_methods",
    "option",
    "register_method",
]
