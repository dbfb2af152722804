"""The Gradio demo: erase a concept, compare before/after images, evaluate. Start it with ``erasekit demo``.

:mod:`~erasekit.demo.callbacks` holds the logic as plain functions (no gradio import), :mod:`~erasekit.demo.app`
the layout; gradio is the ``demo`` extra (``pip install 'erasekit[demo]'``).
"""

from .callbacks import DemoServer, DemoSession, run_safely
from .catalog import ModelCatalog, ModelChoice, default_choices
from .validation import Limits

__all__ = ["DemoServer", "DemoSession", "Limits", "ModelCatalog", "ModelChoice", "default_choices", "run_safely"]
