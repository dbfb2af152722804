"""What the demo's buttons do, as plain functions of a :class:`DemoServer`, a :class:`DemoSession` and the inputs.

Nothing here imports gradio: the layout (:mod:`erasekit.demo.app`) only wires these functions to components, and
the tests call them directly. Every function checks its inputs against :class:`~erasekit.demo.validation.Limits`
before any work starts and raises ``ValueError`` with the fix in the message; :func:`run_safely` turns any failure
into a message for the page, so a failing job leaves the app usable.

Memory is bounded: a session keeps its ``Limits.keep_patches`` newest patches (erasing one more drops the oldest
and its files), and the server keeps at most ``Limits.max_sessions`` sessions, closing the least recently used one
beyond that and any unused for ``Limits.session_idle_seconds``. Sessions live in their :class:`DemoServer`, never in
module globals, and a job sees only its own session's patches.
"""

from __future__ import annotations

import functools
import logging
import operator
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._io import write_json
from ..images import to_pil
from ..methods import Callback, TrainedMethod, TrainingConfig, get_method, list_methods
from ..patch import ErasurePatch
from .catalog import ModelCatalog
from .validation import MAX_SEED, Limits, browser_options, check_method_options, parse_options

logger = logging.getLogger(__name__)

DISPLAY_SIZE = 256  # small generators' images are enlarged (nearest neighbour) to this many pixels for the page
PERCENT_METRICS = ("ua", "ua_heldout", "ira", "cra", "clip_ua", "retain_mean", "uc_mean")
TABLE_FIRST = ("ua", "ira", "cra", "ua_heldout", "retain_mean", "clip_score", "clip_ua", "fid", "erase_seconds")
ProgressFn = Callable[[float, str], None]


# ---- state ------------------------------------------------------------------------------------------------------
@dataclass
class PatchEntry:
    """A patch made in a session, the model it was made on, and its files for download."""

    name: str
    model_key: str
    patch: ErasurePatch
    patch_file: Path
    lora_file: Path | None
    summary: str


class JobCancelled(Exception):
    """The page's Stop button ended a job; nothing it was making is kept."""


@dataclass
class DemoSession:
    """One browser session's server-side state: its model and the patches erased in it (oldest first)."""

    model_key: str
    folder: Path  # per-session folder for the files offered for download
    patches: dict[str, PatchEntry] = field(default_factory=dict)
    downloads: int = 0  # numbering of evaluation files
    erasures: int = 0  # erasures run, dropped patches included (bounded by Limits.max_patches)
    dropped: list[str] = field(default_factory=list)  # names of patches dropped to keep the newest
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _on_close: Callable[[DemoSession], None] | None = field(default=None, repr=False)

    def patch_names(self) -> list[str]:
        """Names of the patches made on the session's current model, oldest first."""
        return [n for n, e in self.patches.items() if e.model_key == self.model_key]

    def close(self) -> None:
        """Drop the session's patches and delete its files (the browser session ended, or the server evicted it)."""
        self.closed = True
        self.cancel.set()  # a job still running for it stops at its next step
        self.patches.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._on_close is not None:
            self._on_close(self)


class DemoServer:
    """What every session shares: the model catalog, the limits, the suites and a temporary root for files.

    Example:
        >>> server = DemoServer(ModelCatalog(default_choices()))
        >>> session = server.new_session()
        >>> result = compare(server, session, "a cat", seed=0, num_images=2, steps=2)
    """

    def __init__(self, catalog: ModelCatalog, limits: Limits | None = None, root: str | Path | None = None):
        self.catalog = catalog
        self.limits = limits or Limits()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="erasekit-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._suites: dict[str, Any] = {}
        self._suite_lock = threading.Lock()
        self._sessions: dict[str, DemoSession] = {}  # by id
        self._sessions_lock = threading.Lock()

    def new_session(self, model_key: str | None = None) -> DemoSession:
        """A session on ``model_key`` (default: the first usable model) with its own download folder.

        Idle sessions are closed first, then the least recently used ones while ``Limits.max_sessions`` are open.
        """
        key = model_key or self.catalog.default_key()
        self.catalog.get(key)
        self.close_idle_sessions()
        with self._sessions_lock:
            by_use = sorted(self._sessions.values(), key=lambda s: s.last_used)
            evicted = by_use[: max(0, len(by_use) - self.limits.max_sessions + 1)]
        for old in evicted:
            logger.info("demo: closing session %s (the server keeps %d)", old.id[:8], self.limits.max_sessions)
            old.close()
        folder = Path(tempfile.mkdtemp(prefix=f"{uuid.uuid4().hex[:8]}-", dir=self.root))
        session = DemoSession(key, folder, _on_close=self._forget)
        with self._sessions_lock:
            self._sessions[session.id] = session
        return session

    def sessions(self) -> list[DemoSession]:
        """The open sessions, least recently used first."""
        with self._sessions_lock:
            return sorted(self._sessions.values(), key=lambda s: s.last_used)

    def close_idle_sessions(self) -> int:
        """Close the sessions unused for ``Limits.session_idle_seconds``; returns how many."""
        cutoff = time.monotonic() - self.limits.session_idle_seconds
        idle = [s for s in self.sessions() if s.last_used < cutoff]
        for session in idle:
            logger.info("demo: closing session %s (idle)", session.id[:8])
            session.close()
        return len(idle)

    def _forget(self, session: DemoSession) -> None:
        with self._sessions_lock:
            self._sessions.pop(session.id, None)

    def suite(self, model_key: str):
        """The evaluation suite of a model (built once); a clear error for models that have none."""
        choice = self.catalog.get(model_key)
        if choice.suite is None:
            raise ValueError(
                f"{choice.label} has no evaluation suite (style and object classifiers). The demo evaluates "
                "MiniCanvas models: the shipped one, or a world folder passed with `erasekit demo --model-dir DIR`."
            )
        with self._suite_lock:
            if model_key not in self._suites:
                self._suites[model_key] = choice.suite()
            return self._suites[model_key]

    def close(self) -> None:
        """Close every session and delete their files."""
        for session in self.sessions():
            session.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _check_session(session: Any) -> DemoSession:
    if not isinstance(session, DemoSession) or session.closed:
        raise ValueError("This page has no session yet (or it expired); reload the page.")
    session.last_used = time.monotonic()
    return session


def cancel(session: Any) -> str:
    """Ask the session's running erasure to stop at its next step (the page's Stop button); nothing is kept."""
    if isinstance(session, DemoSession) and not session.closed:
        session.cancel.set()
    return "Stopping at the next step…"


# ---- errors -----------------------------------------------------------------------------------------------------
def format_error(err: BaseException) -> str:
    """The page's message for a failed job: the error's own text, which names the fix."""
    if isinstance(err, JobCancelled):
        return f"**{err}**"
    if isinstance(err, ValueError | TypeError | FileExistsError):
        return f"**Error:** {err}"
    return f"**Error ({type(err).__name__}):** {err}"


def run_safely(fn: Callable[..., Any], *args, **kwargs) -> tuple[Any, str | None]:
    """``(fn(*args, **kwargs), None)``, or ``(None, message)`` when it raises; the traceback goes to the log.

    Example:
        >>> result, error = run_safely(compare, server, session, "")
        >>> error
        '**Error:** The prompt is empty; type some words.'
    """
    try:
        return fn(*args, **kwargs), None
    except Exception as err:  # any failure is reported in the page; the server keeps serving
        expected = isinstance(
            err, ValueError | TypeError | FileExistsError | JobCancelled
        )  # bad input, Stop: no traceback needed
        logger.log(
            logging.INFO if expected else logging.ERROR,
            "demo job %s failed: %s",
            _name(fn),
            err,
            exc_info=not expected,
        )
        return None, format_error(err)


def _name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


# ---- model and method choice ------------------------------------------------------------------------------------
def select_model(server: DemoServer, session: DemoSession, key: str) -> str:
    """Switch the session to model ``key`` (loading it now, so a failure shows at once); returns a description.

    On failure the session keeps its previous model.
    """
    session = _check_session(session)
    choice = server.catalog.get(key)
    handle = server.catalog.handle(key)
    session.model_key = key
    return describe_model(choice, handle)


def describe_model(choice, handle) -> str:
    """One line about a loaded model."""
    params = sum(p.numel() for m in handle.components.values() for p in m.parameters())
    return (
        f"**{choice.label}**: {choice.kind}, {params / 1e6:.2f} M parameters, "
        f"{handle.image_size}×{handle.image_size} images, {handle.device}."
    )


def methods_for(server: DemoServer, session: DemoSession) -> list[str]:
    """The registered methods that work on the session's model kind."""
    kind = server.catalog.get(_check_session(session).model_key).kind
    return [m for m in list_methods() if kind in get_method(m).kinds]


def default_method(methods: Sequence[str]) -> str | None:
    """The method the form starts with: ``esd`` (the quickstart's) when offered, else the first."""
    return "esd" if "esd" in methods else (methods[0] if methods else None)


@dataclass
class MethodForm:
    """Defaults to put in the erase form when a method is chosen, and the help of its other options."""

    steps: int
    lr: float
    seed: int
    help: str


def method_form(server: DemoServer, method: str) -> MethodForm:
    """The erase form's defaults for ``method`` (its paper defaults, steps capped by the limits), a Markdown table of
    its other options (advanced ones left out, as ``erasekit list`` does) and the presets the worlds ship for it."""
    from ..plugins import list_worlds
    from ..presets import world_presets

    cls = get_method(method).config_class
    cfg = cls()
    advanced = {f.name for f in cls.fields_of(True)} - {f.name for f in cls.fields_of(False)}
    rows = [
        f"| `{n}` | `{d!r}` | {h} |"
        for n, d, h in browser_options(method)
        if n not in ("steps", "lr", "seed") and n not in advanced
    ]
    presets = [p for w in list_worlds() for m, p in world_presets(w).items() if m == method]
    notes = [
        f"- **{p.name}**: {p.description}; "
        + ", ".join(f"`{k}={v!r}`" for k, v in p.options.items())
        + "".join(
            f"; {kind}: " + ", ".join(f"`{k}={v!r}`" for k, v in extra.items()) for kind, extra in p.by_kind.items()
        )
        for p in presets
    ]
    text = "\n".join(
        [
            f"Options of **{method}** (one `key=value` per line; numbers are bounded by the server). The defaults are "
            "the paper's settings for full-size models:",
            "",
            "| option | default | meaning |",
            "|---|---|---|",
            *rows,
            *(["", "Tuned presets (`erasekit erase --preset`):", "", *notes] if notes else []),
        ]
    )
    steps, lr = getattr(cfg, "steps", 1), getattr(cfg, "lr", 0.0)  # closed-form methods have neither
    return MethodForm(min(steps, server.limits.max_erase_steps), lr, cfg.seed, text)


# ---- erase ------------------------------------------------------------------------------------------------------
class _PageProgress(Callback):
    """Reports the shared loop's steps to the page, and ends the run when the session asks it to stop."""

    def __init__(self, report: ProgressFn | None, session: DemoSession):
        self.report = report or (lambda fraction, text: None)
        self.session = session

    def _check(self) -> None:
        if self.session.cancel.is_set():
            raise JobCancelled("Stopped; nothing was kept. The app is ready for the next job.")

    def on_train_start(self, state) -> None:
        self._check()
        self.report(state.step / state.total_steps, f"step {state.step}/{state.total_steps}")

    def on_step_end(self, state, logs: dict) -> None:
        self._check()
        loss = f", loss {logs['loss']:.4g}" if "loss" in logs else ""
        self.report(state.step / state.total_steps, f"step {state.step}/{state.total_steps}{loss}")


@dataclass
class EraseResult:
    """A finished erasure: the patch's session name, its files, and a Markdown summary."""

    name: str
    patch_file: Path
    lora_file: Path | None
    message: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "concept"


def _unique_name(session: DemoSession, base: str) -> str:
    name, i = base, 2
    while name in session.patches:
        name, i = f"{base}-{i}", i + 1
    return name


def erase(
    server: DemoServer,
    session: DemoSession,
    method: str,
    concept: str,
    anchor: str | None = None,
    steps: int = 100,
    lr: float = 1e-5,
    seed: int = 0,
    lora_rank: int = 8,
    options: str | None = None,
    progress: ProgressFn | None = None,
) -> EraseResult:
    """Erase ``concept`` from the session's model; the patch and its LoRA are written to the session folder.

    Args:
        method: a method that works on the model's kind (see :func:`methods_for`).
        concept, anchor: the words to erase and, for methods that use one, what they should become.
        steps, lr, seed: the main hyperparameters; ``options`` holds further ``key=value`` lines.
        lora_rank: rank of the exported LoRA.
        progress: called with ``(fraction, text)`` after every step.
    """
    session, limits = _check_session(session), server.limits
    if method not in methods_for(server, session):
        raise ValueError(
            f"Method {method!r} does not work on this model; choose one of {methods_for(server, session)}."
        )
    concept = limits.check_text("The concept", concept)
    anchor = limits.check_text("The anchor", anchor, required=False) or None
    extra = check_method_options(method, parse_options(options), limits)
    clash = sorted(set(extra) & {"steps", "lr", "seed"})
    if clash:
        raise ValueError(f"Set {', '.join(clash)} with the form's fields, not in the options box.")
    overrides = {
        **extra,
        "steps": limits.check_int("Steps", steps, 1, limits.max_erase_steps),
        "lr": limits.check_float("Learning rate", lr, 1e-12, 1.0),
        "seed": limits.check_int("Seed", seed, 0, MAX_SEED),
        "progress": False,
    }
    if not issubclass(get_method(method).config_class, TrainingConfig):  # closed form: no steps or lr to set
        overrides = {k: v for k, v in overrides.items() if k not in ("steps", "lr")}
    rank = limits.check_int("LoRA rank", lora_rank, 1, limits.max_lora_rank)
    if session.erasures >= limits.max_patches:
        raise ValueError(f"This session has made {session.erasures} patches, the most allowed; reload the page.")
    from ..presets import resolve_erasure

    cls = get_method(method)
    resolved = resolve_erasure(method, None, concept, anchor, overrides=overrides, preset="none")  # the form's values
    session.cancel.clear()  # a Stop pressed before this job started is not for it
    page = _PageProgress(progress, session)
    callbacks = [page] if issubclass(cls, TrainedMethod) else []
    if progress:
        progress(0.0, f"{method}: preparing")
    with server.catalog.using(session.model_key) as handle:
        page._check()  # stopped while waiting for the model
        patch = cls(resolved.config, resolved.run).erase(handle, concept, anchor=anchor, callbacks=callbacks)
    page._check()
    if progress:
        progress(1.0, f"{method}: writing the patch and its LoRA")
    session.erasures += 1
    name = _unique_name(session, f"{method}-{_slug(concept)}")
    return _store(session, name, patch, rank, limits.keep_patches)


def _drop_oldest(session: DemoSession, keep: int) -> None:
    """Drop the session's oldest patches (and their files) until ``keep`` remain."""
    while len(session.patches) > keep:
        name = next(iter(session.patches))
        entry = session.patches.pop(name)
        for path in (entry.patch_file, entry.lora_file):
            if path is not None:
                path.unlink(missing_ok=True)
        session.dropped.append(name)
        logger.info("demo: session %s dropped patch %s (keeps %d)", session.id[:8], name, keep)


def _store(session: DemoSession, name: str, patch: ErasurePatch, rank: int, keep: int = 8) -> EraseResult:
    """Write the patch and its LoRA (atomically) and remember the patch in the session, dropping the oldest one
    when the session already keeps ``keep``."""
    if session.closed:
        raise ValueError("This page's session expired while the job ran; reload the page.")
    patch_file = patch.save(session.folder / f"{name}.safetensors")
    lora_file, lora_note = session.folder / f"{name}_lora.safetensors", ""
    try:
        report = patch.save_lora(lora_file, rank=rank)
        lora_note = f"LoRA rank {rank}: relative error {report.relative_error:.3g}"
        if report.dropped:
            lora_note += f", {len(report.dropped)} tensors LoRA cannot express were left out"
    except ValueError as err:  # the patch is still good; only its LoRA form is impossible
        lora_file, lora_note = None, f"no LoRA: {err}"
    stats = patch.metadata.get("stats", {})
    seconds = stats.get("erase_seconds")
    summary = (
        f"**{name}**: {patch.metadata.get('method')} erased *{patch.metadata.get('concept')}* — "
        f"{len(patch)} tensors, {patch.num_changed:,} values, {patch.nbytes / 1e3:.1f} kB"
        + (f", {seconds:.1f} s" if isinstance(seconds, float) else "")
        + f". {lora_note}."
    )
    session.patches[name] = PatchEntry(name, session.model_key, patch, patch_file, lora_file, summary)
    _drop_oldest(session, keep)
    return EraseResult(name, patch_file, lora_file, summary)


# ---- compare ----------------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    """Images for the same seeds without and with the patches, each as ``(image, caption)``."""

    before: list[tuple[Image.Image, str]]
    after: list[tuple[Image.Image, str]]
    message: str


def compose(session: DemoSession, names: Sequence[str] | None) -> tuple[ErasurePatch | None, str]:
    """The sum of the named patches of the session's model (``None`` for none) and a note about overlaps."""
    names = list(names or [])
    for name in names:
        entry = session.patches.get(name) if isinstance(name, str) else None
        if entry is None and name in session.dropped:
            raise ValueError(
                f"Patch {name!r} was dropped: a session keeps its newest patches only; download patches to keep them."
            )
        if entry is None:
            raise ValueError(f"No patch named {name!r} in this session; erase a concept first.")
        if entry.model_key != session.model_key:
            raise ValueError(f"Patch {name!r} was made on another model; switch back to it or erase again.")
    if not names:
        return None, ""
    patches = [session.patches[n].patch for n in names]
    seen, overlap = set(), set()
    for p in patches:
        overlap |= seen & set(p.deltas)
        seen |= set(p.deltas)
    note = f" The patches overlap on {len(overlap)} tensors; their deltas are summed." if overlap else ""
    return functools.reduce(operator.add, patches), note


def _display(images: torch.Tensor, seeds: Sequence[int]) -> list[tuple[Image.Image, str]]:
    out = []
    for image, seed in zip(images, seeds, strict=True):
        pil = to_pil(image)
        if pil.width < DISPLAY_SIZE:
            pil = pil.resize((DISPLAY_SIZE, DISPLAY_SIZE * pil.height // pil.width), Image.NEAREST)
        out.append((pil, f"seed {seed}"))
    return out


def _generate(handle, prompt: str, seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
    if handle.kind == "stylegan":  # a GAN draws from its seeds alone
        return handle.generate(seeds)
    return handle.generate([prompt] * len(seeds), seeds, steps, guidance)


def compare(
    server: DemoServer,
    session: DemoSession,
    prompt: str,
    seed: int = 0,
    num_images: int = 2,
    steps: int = 25,
    guidance: float = 7.5,
    patch_names: Sequence[str] | None = None,
    scale: float = 1.0,
) -> CompareResult:
    """Generate ``num_images`` images (seeds ``seed, seed+1, ...``) before and after the chosen patches.

    The patches are composed, applied at ``scale`` (0 = the base model, 1 = full erasure) for the "after" images
    only, and removed bit-exactly afterwards.
    """
    session, limits = _check_session(session), server.limits
    kind = server.catalog.get(session.model_key).kind
    prompt = limits.check_text("The prompt", prompt, required=kind != "stylegan")
    n = limits.check_int("Images", num_images, 1, limits.max_images)
    seed = limits.check_int("Seed", seed, 0, MAX_SEED - n)
    steps = limits.check_int("Steps", steps, 1, limits.max_sample_steps)
    guidance = limits.check_float("Guidance", guidance, 0.0, limits.max_guidance)
    scale = limits.check_float("Patch scale", scale, 0.0, 1.0)
    patch, note = compose(session, patch_names)
    seeds = list(range(seed, seed + n))
    with server.catalog.using(session.model_key) as handle:
        before = _generate(handle, prompt, seeds, steps, guidance)
        if patch is None:
            return CompareResult(_display(before, seeds), [], "No patch chosen: erase a concept, then tick it here.")
        with patch.applied(handle, scale=scale):
            after = _generate(handle, prompt, seeds, steps, guidance)
    change = float((after - before).abs().mean())
    message = f"{len(patch_names)} patch(es) at scale {scale:g}; mean absolute pixel change {change:.3g}.{note}"
    return CompareResult(_display(before, seeds), _display(after, seeds), message)


# ---- evaluate ---------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """The headline metrics as table rows (``columns`` first), the full report, its grid and JSON files."""

    columns: list[str]
    rows: list[list[str]]
    markdown: str
    grid_file: Path
    json_file: Path
    message: str


def eval_targets(server: DemoServer, session: DemoSession) -> list[str]:
    """``style:NAME`` / ``object:NAME`` targets of the model's suite (empty when it has no suite)."""
    choice = server.catalog.get(_check_session(session).model_key)
    if choice.suite is None or server.catalog.unavailable(choice.key):
        return []
    suite = server.suite(choice.key)
    return [f"style:{s}" for s in suite.styles] + [f"object:{o}" for o in suite.objects]


def _cell(key: str, value: Any) -> str:
    if key in PERCENT_METRICS and isinstance(value, float):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def metrics_table(reports: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows ``[metric, value per report]`` of every scalar metric, UA/IRA/CRA first."""
    keys: list[str] = []
    for report in reports.values():
        keys += [k for k, v in report.metrics.items() if isinstance(v, int | float) and k not in keys]
    keys = [k for k in TABLE_FIRST if k in keys] + sorted(k for k in keys if k not in TABLE_FIRST)
    rows = [[k, *(_cell(k, r.metrics.get(k)) for r in reports.values())] for k in keys]
    return ["metric", *reports], rows


def evaluate(
    server: DemoServer,
    session: DemoSession,
    target: str,
    patch_names: Sequence[str] | None = None,
    scale: float = 1.0,
    num_seeds: int = 1,
    steps: int = 25,
    full_metrics: bool = False,
    include_base: bool = True,
) -> EvalResult:
    """Score the session's model, with the chosen patches composed and applied, on its suite's full grid.

    Args:
        target: ``style:NAME`` or ``object:NAME`` of the suite (see :func:`eval_targets`).
        num_seeds: seeds per prompt (0, 1, ...); steps: sampler steps.
        full_metrics: also CLIP score, CLIP zero-shot accuracy and FID (slower); otherwise UA/IRA/CRA and cost.
        include_base: also score the unpatched model, as a column to compare with.
    """
    from ..eval import evaluate as run_evaluation

    session, limits = _check_session(session), server.limits
    suite = server.suite(session.model_key)
    parsed = suite.parse_target(limits.check_text("The target", target))
    seeds = list(range(limits.check_int("Seeds", num_seeds, 1, limits.max_eval_seeds)))
    steps = limits.check_int("Steps", steps, 1, limits.max_sample_steps)
    scale = limits.check_float("Patch scale", scale, 0.0, 1.0)
    patch, note = compose(session, patch_names)
    metrics = None if full_metrics else ["ua", "ira", "cra", "retainability", "efficiency"]
    runs = {"base": None, "patched": patch} if patch is not None and include_base else {}
    runs = runs or ({"patched": patch} if patch is not None else {"base": None})
    reports = {}
    with server.catalog.using(session.model_key) as handle:
        for column, p in runs.items():
            reports[column] = run_evaluation(
                handle, suite, parsed, patch=p, seeds=seeds, steps=steps, metrics=metrics, scale=scale
            )
    columns, rows = metrics_table(reports)
    shown = reports.get("patched") or reports["base"]
    session.downloads += 1
    stem = session.folder / f"eval-{session.downloads}-{_slug(str(parsed))}"
    grid_file = shown.save_grid(stem.with_suffix(".png"))
    json_file = write_json(stem.with_suffix(".json"), {k: r.to_dict() for k, r in reports.items()})
    what = f"{len(patch_names)} patch(es) at scale {scale:g}" if patch is not None else "the base model"
    message = f"Evaluated {what} on target `{parsed}`: {len(shown.records)} images per run.{note}"
    return EvalResult(columns, rows, shown.to_markdown(), grid_file, json_file, message)
