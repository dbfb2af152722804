"""The ``erasekit.plugins`` entry point: registers MiniCanvas and MiniFaces with erasekit's registries.

Everything here is cheap to import: the worlds' modules load only when a registered function is called.
"""

from __future__ import annotations

from pathlib import Path


def _minicanvas_shipped() -> Path:
    from .minicanvas.manifest import weights_dir

    return weights_dir()


def _minicanvas_pipeline(world: Path) -> Path:
    folder = world / "pipeline"
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"No MiniCanvas pipeline at {folder}. Train a world with `erasekit world train minicanvas "
            "--out DIR` and use --model minicanvas:DIR."
        )
    return folder


def _minicanvas_plan(method: str, target: str):
    from .minicanvas.plans import erasure_plan

    return erasure_plan(method, target)


def _minicanvas_target_of(concept: str):
    from .minicanvas.plans import target_of

    return target_of(concept)


def _presets(world: str):
    """``() -> {method: file}`` of the presets shipped in ``erasekit_worlds/<world>/presets/``."""

    def presets() -> dict[str, Path]:
        folder = Path(__file__).parent / world / "presets"
        return {p.stem: p for p in sorted(folder.glob("*.yaml"))}

    return presets


def _minicanvas_verify(world: Path) -> list[str]:
    from .minicanvas.manifest import verify_manifest

    return verify_manifest(world)


def _minicanvas_suite(world_dir=None):
    from .minicanvas.suite import minicanvas_suite

    return minicanvas_suite(world_dir)


def _minifaces_shipped() -> Path:
    from .minifaces.manifest import weights_dir

    return weights_dir()


def _minifaces_generator(world: Path) -> Path:
    from .minifaces.manifest import GENERATOR

    path = world / GENERATOR
    if not path.is_file():
        raise ValueError(
            f"No MiniFaces generator at {path}. Train a world with `erasekit world train minifaces --out DIR` and "
            "use --model minifaces:DIR."
        )
    return path


def _minifaces_plan(method: str, target):
    from .minifaces.plans import erasure_plan

    return erasure_plan(method, target)


def _minifaces_target_of(concept: str):
    from .minifaces.plans import target_of

    return target_of(concept)


def _minifaces_verify(world: Path) -> list[str]:
    from .minifaces.manifest import verify_manifest

    return verify_manifest(world)


def _minifaces_suite(world_dir=None):
    from .minifaces.suite import minifaces_suite

    return minifaces_suite(world_dir)


def register() -> None:
    """Register both worlds, their suites and the ``erasekit world`` command."""
    from erasekit.eval.suite import register_suite
    from erasekit.plugins import World, register_command, register_world

    from . import cli

    register_world(
        World(
            name="minicanvas",
            title="MiniCanvas",
            kind="diffusion",
            description="the shipped MiniCanvas world's Stable Diffusion pipeline (minicanvas:/path for a trained world)",
            shipped=_minicanvas_shipped,
            model_path=_minicanvas_pipeline,
            suite="minicanvas",
            plan=_minicanvas_plan,
            presets=_presets("minicanvas"),
            target_of=_minicanvas_target_of,
            verify=_minicanvas_verify,
            recognises=lambda folder: (folder / "pipeline" / "model_index.json").is_file(),
        )
    )
    register_world(
        World(
            name="minifaces",
            title="MiniFaces",
            kind="stylegan",
            description="the shipped MiniFaces world's StyleGAN2 generator (minifaces:/path for a trained world)",
            shipped=_minifaces_shipped,
            model_path=_minifaces_generator,
            suite="minifaces",
            plan=_minifaces_plan,
            presets=_presets("minifaces"),
            target_of=_minifaces_target_of,
            verify=_minifaces_verify,
            recognises=lambda folder: (folder / "generator.safetensors").is_file(),
        )
    )
    register_suite("minicanvas")(_minicanvas_suite)
    register_suite("minifaces")(_minifaces_suite)
    register_command(cli)
