"""erasekit: erase concepts from pretrained image generators and prove they are gone.

Example:
    >>> import erasekit
    >>> pipe = erasekit.load_pipeline("tiny-sd")
    >>> patch = erasekit.erase(pipe, "esd", "a cat", steps=2)
    >>> with patch.applied(pipe):
    ...     image = pipe("a cat").images[0]
"""

__version__ = "0.1.0"

from .api import erase, resolve_config  # noqa: E402
from .attacks import AttackReport, attack, list_attacks  # noqa: E402
from .eval import evaluate  # noqa: E402
from .methods import get_method, list_methods, register_method  # noqa: E402
from .models import load_model, load_pipeline  # noqa: E402
from .patch import ErasurePatch, load_patch  # noqa: E402

__all__ = [
    "AttackReport",
    "ErasurePatch",
    "__version__",
    "attack",
    "erase",
    "evaluate",
    "get_method",
    "list_attacks",
    "list_methods",
    "load_model",
    "load_patch",
    "load_pipeline",
    "register_method",
    "resolve_config",
]
