"""mkdocs hook: the pages that must follow the code are generated at build time, never written by hand.

- ``reference/cli.md``: ``erasekit --help`` and every subcommand's ``--help``, from ``build_parser()`` in-process
  (plugin commands such as ``erasekit world`` included when their package is installed).
- ``reference/options.md``: every registered method's options, from the help text on its config dataclass's fields
  (what ``erasekit list METHOD`` prints).
- The "Results" nav section lists ``docs/results/*.md`` as the benchmark scripts wrote them, so a new result file
  appears without editing ``mkdocs.yml``.
- Pages other people write (``OPTIONAL_PAGES``) stay in the nav only while they exist.
- Images that live beside the models or the benchmark results (``COPIED_IMAGES``) are served from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import logging
import os
import re
from pathlib import Path

import yaml
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.generate")

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = "results"
RESULTS_SECTION = "Results"
OPTIONAL_PAGES = ("parity.md", "reference/patch-format.md")
# site path -> source path relative to the repository root
COPIED_IMAGES = {
    "images/minicanvas_samples.png": "benchmarks/results/minicanvas_fidelity_grid.png",
    "images/minifaces_samples.png": "erasekit_worlds/minifaces/weights/samples.png",
}
HELP_COLUMNS = "100"


# ---- nav ---------------------------------------------------------------------------------------------------------
def on_config(config):
    docs = Path(config["docs_dir"])
    config["nav"] = _prune(config["nav"] or [], docs, _results(docs))
    return config


def _results(docs: Path) -> list:
    """Nav entries for ``docs/results/*.md``, titled by their first heading (plus the file name where two agree)."""
    paths = sorted((docs / RESULTS_DIR).glob("*.md"))
    titles = {}
    for path in paths:
        heading = re.search(r"^#\s+(.+?)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE)
        titles[path] = heading.group(1) if heading else path.stem.replace("_", " ")
    repeated = {t for t in titles.values() if list(titles.values()).count(t) > 1}
    return [
        {f"{titles[p]}: {p.stem}" if titles[p] in repeated else titles[p]: p.relative_to(docs).as_posix()}
        for p in paths
    ]


def _prune(items: list, docs: Path, results: list[str]) -> list:
    out = []
    for item in items:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if title == RESULTS_SECTION:
                value = list(results)
            elif isinstance(value, list):
                value = _prune(value, docs, results)
            elif isinstance(value, str) and value in OPTIONAL_PAGES and not (docs / value).is_file():
                log.info("nav: %s is not written yet; left out", value)
                continue
            if isinstance(value, list) and not value:
                continue
            out.append({title: value})
        elif isinstance(item, str) and item in OPTIONAL_PAGES and not (docs / item).is_file():
            log.info("nav: %s is not written yet; left out", item)
        else:
            out.append(item)
    return out


# ---- generated files ---------------------------------------------------------------------------------------------
def on_files(files, config):
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    files.append(File.generated(config, "reference/options.md", content=options_page()))
    for uri, source in COPIED_IMAGES.items():
        path = ROOT / source
        if path.is_file():
            files.append(File.generated(config, uri, abs_src_path=str(path)))
        else:
            log.warning(
                "%s is missing, so %s cannot be shown; fix COPIED_IMAGES in docs/hooks/generate.py", source, uri
            )
    return files


def cli_page() -> str:
    """The CLI reference: every parser's ``--help``, at a fixed width so the page does not depend on the terminal."""
    os.environ["COLUMNS"] = HELP_COLUMNS
    from erasekit.cli.main import build_parser

    parser = build_parser()
    lines = [
        "# CLI reference",
        "",
        "Generated from `erasekit --help` and each subcommand's `--help` when the site is built. Method options "
        "given with `--set KEY=VALUE` are listed in [Method options](options.md).",
        "",
    ]
    for name, sub in [("erasekit", parser), *_subparsers(parser, "erasekit")]:
        depth = name.count(" ")
        lines += [f"{'#' * min(depth + 2, 4)} `{name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def _subparsers(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}"
                yield full, sub
                yield from _subparsers(sub, full)


def options_page() -> str:
    """Every registered method's options: shared ones once, then each method's own and the defaults it changes."""
    from erasekit.methods import MethodConfig, get_method, list_methods

    shared = {f.name: f for f in dataclasses.fields(MethodConfig)}
    lines = [
        "# Method options",
        "",
        "Generated from the help text of each method's config dataclass when the site is built; "
        "`erasekit list METHOD` prints the same, and `erasekit list METHOD --yaml` writes it as a config file.",
        "",
        "Set options with `--set KEY=VALUE` on the command line (values are read as YAML: `--set steps=200`, "
        "`--set 'target=[unet, -xattn]'`), as keyword arguments in Python (`erasekit.erase(pipe, \"esd\", "
        '"a cat", steps=200)`), or in a YAML file given with `--config` / `config=`. An unknown option is an error '
        "that names the closest valid one.",
        "",
        "## Options every method has",
        "",
        "Defaults shown are `MethodConfig`'s; each method below lists the ones it changes.",
        "",
        *_table(MethodConfig, list(shared.values())),
        "",
        *_presets(),
    ]
    for name in list_methods():
        cls = get_method(name)
        cfg = cls.config_class
        own, changed = [], []
        for f in dataclasses.fields(cfg):
            if f.name not in shared:
                own.append(f)
            elif _default(f) != _default(shared[f.name]):
                changed.append(f)
        kinds = ", ".join(cls.kinds)
        lines += [
            f"## `{name}`",
            "",
            f"{_text(cls.summary)}. Config class `{cfg.__module__}.{cfg.__qualname__}`; works on: {kinds} models.",
            "",
        ]
        if changed:
            lines += ["Shared options with other defaults:", "", *_table(cfg, changed), ""]
        if own:
            lines += [f"Options of `{name}`:", "", *_table(cfg, own), ""]
    return "\n".join(lines)


def _presets() -> list[str]:
    """The named parameter sets ``target`` accepts, per model kind."""
    from erasekit.patch.targets import PRESETS

    lines = [
        "## Target presets",
        "",
        "`target` takes a preset name, `re:<regex>` (matched with `re.fullmatch` against "
        '`"<component>.<parameter>"` names), or a list of them in which an item starting with `-` removes what it '
        "matches: `--set 'target=[unet, -xattn]'`. A target that selects no parameter is an error.",
        "",
    ]
    for kind, presets in PRESETS.items():
        lines += [f"{kind.capitalize()} models:", "", "| preset | parameters | regex |", "|---|---|---|"]
        lines += [f"| `{name}` | {_text(desc)} | {_code(regex)} |" for name, (regex, desc) in presets.items()]
        lines.append("")
    return lines


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _table(cfg: type, fields: list[dataclasses.Field]) -> list[str]:
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for f in fields:
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append(
            f"| `{f.name}` | {_code(kind)} | {_code(_yaml(_default(f)))} | {_text(f.metadata.get('help', ''))} |"
        )
    return rows


def _yaml(value) -> str:
    """A default as it would be written after ``--set KEY=`` (YAML flow style)."""
    return yaml.safe_dump({"v": value}, default_flow_style=True, width=10**6, allow_unicode=True).strip()[4:-1]


def _code(text: str) -> str:
    """Inline code for a table cell: Python-Markdown's tables do not split a row at a pipe inside a code span."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def _text(text: str) -> str:
    """Help text as literal Markdown: no HTML, no emphasis, no row-splitting pipes."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False)).replace("\n", " ")
