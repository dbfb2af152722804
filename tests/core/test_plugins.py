"""The plugin registries: a world registered from outside the core is a model spec, a suite owner and a CLI world."""

from __future__ import annotations

import pytest

import erasekit
from erasekit import plugins
from erasekit.plugins import World, get_world, list_worlds, register_world, world_of_spec


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the world registry, so a test's worlds do not leak into others."""
    monkeypatch.setattr(plugins, "_WORLDS", dict(plugins._WORLDS))
    return plugins._WORLDS


def test_shipped_worlds_plug_in_through_the_entry_point():
    names = [w.name for w in list_worlds()]
    assert names[:2] == ["minicanvas", "minifaces"]
    assert get_world("minifaces").kind == "stylegan" and get_world("minicanvas").suite == "minicanvas"
    assert "world" in [getattr(m, "NAME", None) for m in plugins.commands()]


def test_a_third_party_world_is_a_model_spec(registry, tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    register_world(
        World(
            name="toyworld",
            kind="diffusion",
            description="a test world",
            shipped=lambda: tmp_path,
            model_path=lambda folder: folder / "pipe",
        )
    )
    world, folder = world_of_spec("toyworld")
    assert world.name == "toyworld" and folder == tmp_path
    assert world_of_spec(f"toyworld:{tmp_path / 'other'}")[1] == tmp_path / "other"
    assert world_of_spec("no-such-world") is None and world_of_spec("local:/x") is None
    handle = erasekit.load_model("toyworld", device="cpu")
    assert handle.kind == "diffusion"
    assert "toyworld" in erasekit.models.builtin_specs()


def test_bad_worlds_are_refused(registry):
    def make(name, kind="diffusion"):
        return World(name=name, kind=kind, description="", shipped=lambda: None, model_path=lambda f: f)

    with pytest.raises(ValueError, match="already registered"):
        register_world(make("minicanvas"))
    with pytest.raises(ValueError, match="already registered"):
        register_world(make("tiny-sd"))
    with pytest.raises(ValueError, match="plain word"):
        make("a:b")
    with pytest.raises(ValueError, match="kind must be one of"):
        make("toy", kind="vae")
    with pytest.raises(ValueError, match="Unknown world 'nowhere'; registered worlds: minicanvas"):
        get_world("nowhere")
