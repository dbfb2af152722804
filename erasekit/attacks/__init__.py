"""Attacks on an erasure (DESIGN.md §8): relearning, adversarial prompts, textual inversion, quantization and
representation probes, each registered by name and run on the erased, base and gold models alike."""

from . import inversion, probe, prompt, quantize, relearn  # noqa: F401  (register the attacks)
from .api import DEFAULT_ATTACKS, attack
from .base import Attack, AttackConfig, AttackContext, get_attack, list_attacks, register_attack
from .judge import AttributeJudge, ClassifierJudge, ClipJudge, Judge
from .report import AttackReport

__all__ = [
    "DEFAULT_ATTACKS",
    "Attack",
    "AttackConfig",
    "AttackContext",
    "AttackReport",
    "AttributeJudge",
    "ClassifierJudge",
    "ClipJudge",
    "Judge",
    "attack",
    "get_attack",
    "list_attacks",
    "register_attack",
]
