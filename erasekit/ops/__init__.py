"""Pure math behind the methods, each with known-answer tests."""

from .esd import esd_target

__all__ = ["esd_target"]
