"""Griffe extension for the API reference: read an ``Example:`` section as Google style's ``Examples:``.

erasekit's docstrings head their doctest snippets ``Example:``. Griffe's Google parser knows only the plural as an
examples section and renders the singular as an admonition of Markdown, where ``>>>`` lines become block quotes.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
