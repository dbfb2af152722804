"""The demo's callbacks as plain functions, on tiny-sd: validation, erase, compare, composition, evaluate, errors."""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import pytest
from conftest import FAST_CONFIGS, assert_bit_equal, state_of
from eval_fixtures import tiny_suite
from safetensors import safe_open

from erasekit import load_patch
from erasekit.demo import callbacks as cb
from erasekit.demo.catalog import ModelCatalog, ModelChoice, default_choices, local_choice
from erasekit.demo.validation import Limits, check_method_options, parse_options
from erasekit.models import load_model

ESD_OPTIONS = f"ddim_steps={FAST_CONFIGS['esd']['ddim_steps']}"  # steps come from the form's own field


def _choice(key, pipe, suite=None, probe=None):
    return ModelChoice(key, key, "diffusion", lambda: load_model(pipe), suite, probe)


@pytest.fixture
def server(tiny_pipe, _tiny_pipe_session, tmp_path):
    """A server with two copies of tiny-sd (the second with an evaluation suite) and an unusable model."""
    import copy

    catalog = ModelCatalog(
        [
            _choice("tiny-sd", tiny_pipe),
            _choice("tiny-eval", copy.deepcopy(_tiny_pipe_session), suite=lambda: tiny_suite(with_clip=False)),
            _choice("gone", None, probe=lambda: "Not installed: train it first."),
        ]
    )
    srv = cb.DemoServer(catalog, root=tmp_path / "server")
    yield srv
    srv.close()


@pytest.fixture
def session(server):
    return server.new_session("tiny-sd")


def _erase(server, session, concept="a cat", **kwargs):
    kwargs = {"steps": 2, "lr": 1e-2, "options": ESD_OPTIONS, **kwargs}
    return cb.erase(server, session, kwargs.pop("method", "esd"), concept, **kwargs)


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image, _ in images])


# ---- validation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lim: lim.check_int("Steps", 51, 1, 50), "between 1 and 50"),
        (lambda lim: lim.check_int("Steps", 2.5, 1, 50), "whole number"),
        (lambda lim: lim.check_int("Steps", True, 1, 50), "whole number"),
        (lambda lim: lim.check_float("Scale", float("nan"), 0, 1), "finite"),
        (lambda lim: lim.check_float("Scale", 1.5, 0, 1), "between 0"),
        (lambda lim: lim.check_text("The prompt", "  "), "empty"),
        (lambda lim: lim.check_text("The prompt", "x" * 201), "at most 200"),
        (lambda lim: lim.check_text("The prompt", "a\x00b"), "control characters"),
    ],
)
def test_limits_refuse_out_of_bounds_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(Limits())


def test_limits_accept_in_bounds_input():
    lim = Limits()
    assert lim.check_int("Steps", 3.0, 1, 50) == 3  # sliders send floats
    assert lim.check_float("Scale", 1, 0, 1) == 1.0
    assert lim.check_text("The anchor", None, required=False) == ""
    assert lim.check_text("The prompt", "  a cat ") == "a cat"


def test_parse_options_reads_key_value_lines():
    assert parse_options("ddim_steps=3\n# a comment\n\nvariant=u; lr=2e-5") == {
        "ddim_steps": 3,
        "variant": "u",
        "lr": 2e-5,
    }
    assert parse_options(None) == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_options("ddim_steps 3")
    with pytest.raises(ValueError, match="twice"):
        parse_options("seed=1\nseed=2")


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("esd", {"checkpoint_dir": "/tmp"}, "managed by the demo server"),
        ("esd", {"resume": True}, "managed by the demo server"),
        ("salun", {"forget_images": "/etc"}, "may name files on the server"),
        ("salun", {"retain_images": "/etc"}, "may name files on the server"),
        ("esd", {"ddim_stesp": 3}, "Did you mean 'ddim_steps'"),
        ("esd", {"ddim_steps": 10_000}, "between 0 and 64"),
        ("esd", {"batch_size": 9}, "between 0 and 8"),
        ("esd", {"negative_guidance": float("inf")}, "finite"),
        ("uce", {"preserve": ["a dog"] * 17}, "at most 16"),
        ("uce", {"guide": "x" * 300}, "at most 200"),
    ],
)
def test_method_options_from_the_browser_are_bounded_and_never_paths(method, options, message):
    with pytest.raises(ValueError, match=message):
        check_method_options(method, options, Limits())


def test_method_options_in_bounds_pass_through():
    opts = {"ddim_steps": 3, "variant": "u", "negative_guidance": 2.0, "seed": 123456}
    assert check_method_options("esd", opts, Limits()) == opts
    assert check_method_options("uce", {"preserve": ["a dog"], "guide": None}, Limits())["preserve"] == ["a dog"]


# ---- models -----------------------------------------------------------------------------------------------------
def test_catalog_offers_only_its_own_list(server, session):
    with pytest.raises(ValueError, match="Unknown model '/etc/passwd'"):
        server.catalog.get("/etc/passwd")
    assert server.catalog.dropdown()[2] == ("gone (unavailable)", "gone")
    assert server.catalog.default_key() == "tiny-sd"
    with pytest.raises(ValueError, match="Duplicate model keys"):
        ModelCatalog([_choice("a", None), _choice("a", None)])


def test_selecting_an_unusable_model_keeps_the_previous_one(server, session):
    result, error = cb.run_safely(cb.select_model, server, session, "gone")
    assert result is None and error == "**Error:** Not installed: train it first."
    assert session.model_key == "tiny-sd"
    assert "tiny-eval" in cb.select_model(server, session, "tiny-eval") and session.model_key == "tiny-eval"


def test_default_choices_explain_missing_worlds():
    from erasekit_worlds.minicanvas import weights_dir

    catalog = ModelCatalog(default_choices())
    assert [c.key for c in catalog] == ["minicanvas", "tiny-sd", "minifaces"]
    assert catalog.unavailable("tiny-sd") is None
    shipped = (weights_dir() / "pipeline" / "model_index.json").is_file()
    assert (catalog.unavailable("minicanvas") is None) == shipped
    if not shipped:
        assert "--model-dir" in catalog.unavailable("minicanvas")
        with pytest.raises(ValueError, match="erasekit world train minicanvas"):
            catalog.handle("minicanvas")
    from erasekit_worlds.minifaces import weights_dir as faces_dir

    faces = (faces_dir() / "generator.safetensors").is_file()
    assert (catalog.unavailable("minifaces") is None) == faces
    if not faces:
        assert "erasekit world train minifaces" in catalog.unavailable("minifaces")


def test_local_folders_are_checked_when_the_server_starts(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        local_choice(1, tmp_path, {})
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    choice = local_choice(1, tmp_path / "pipe", {"device": "cpu"})
    assert (choice.key, choice.label, choice.suite) == ("local-1", "pipe (local folder)", None)
    handle = choice.load()
    assert handle.spec == str((tmp_path / "pipe").resolve())
    tiny_pipe.save_pretrained(tmp_path / "world" / "pipeline")  # a MiniCanvas world folder (no classifiers yet)
    world = local_choice(2, tmp_path / "world", {"device": "cpu"})
    assert (world.key, world.label, world.suite) == ("local-2", "world (local folder)", None)
    assert world.load().spec == f"minicanvas:{(tmp_path / 'world').resolve()}"


# ---- erase ------------------------------------------------------------------------------------------------------
def test_erase_writes_patch_and_lora_and_reports_progress(server, session, tiny_pipe):
    before = state_of(tiny_pipe.unet)
    seen = []
    result = _erase(server, session, progress=lambda fraction, text: seen.append((fraction, text)))
    assert_bit_equal(state_of(tiny_pipe.unet), before)  # the shared model is left as it was
    assert result.name == "esd-a-cat" and session.patch_names() == ["esd-a-cat"]
    assert result.patch_file.parent == session.folder and result.lora_file.parent == session.folder
    patch = load_patch(result.patch_file)
    assert patch.metadata["method"] == "esd" and patch.metadata["config"]["steps"] == 2
    assert patch.metadata["config"]["ddim_steps"] == 3 and patch.metadata["config"]["lr"] == 1e-2
    with safe_open(str(result.lora_file), "pt") as f:
        assert any(k.endswith("lora_A.weight") for k in f.keys())
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and "step 2/2" in " ".join(t for _, t in seen)
    assert "esd-a-cat" in result.message and "LoRA rank 8" in result.message
    assert _erase(server, session).name == "esd-a-cat-2"  # names stay unique within a session


def test_erase_without_a_training_loop(server, session):
    seen = []
    result = cb.erase(
        server, session, "uce", "a cat", options="preserve=[a dog]", progress=lambda f, t: seen.append(f)
    )
    assert result.name == "uce-a-cat" and result.patch_file.is_file() and seen[-1] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concept": ""}, "concept is empty"),
        ({"method": "nope"}, "does not work on this model"),
        ({"steps": 0}, "Steps must be between 1 and 1000"),
        ({"lr": 2.0}, "Learning rate must be between"),
        ({"lora_rank": 65}, "LoRA rank must be between 1 and 64"),
        ({"options": "steps=5"}, "form's fields"),
        ({"options": "checkpoint_dir=/tmp/x"}, "managed by the demo server"),
    ],
)
def test_erase_refuses_bad_input_before_any_work(server, session, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _erase(server, session, **kwargs)
    assert not session.patches and not list(session.folder.iterdir())


def test_a_session_holds_a_bounded_number_of_patches(server, session):
    server.limits = Limits(max_patches=1)
    _erase(server, session)
    with pytest.raises(ValueError, match="most allowed"):
        _erase(server, session)


# ---- compare ----------------------------------------------------------------------------------------------------
def test_compare_same_seeds_before_and_after(server, session, tiny_pipe):
    name = _erase(server, session).name
    base = state_of(tiny_pipe.unet)
    result = cb.compare(server, session, "a cat", seed=5, num_images=2, steps=2, patch_names=[name])
    assert [c for _, c in result.before] == [c for _, c in result.after] == ["seed 5", "seed 6"]
    assert result.before[0][0].size == (cb.DISPLAY_SIZE, cb.DISPLAY_SIZE)  # 32 px images enlarged for the page
    assert not np.array_equal(_pixels(result.before), _pixels(result.after))
    assert "mean absolute pixel change" in result.message
    assert_bit_equal(state_of(tiny_pipe.unet), base)  # the patch is removed after sampling
    plain = cb.compare(server, session, "a cat", seed=5, num_images=2, steps=2)
    np.testing.assert_array_equal(_pixels(plain.before), _pixels(result.before))
    assert plain.after == [] and "No patch chosen" in plain.message


def test_compare_at_scale_zero_is_the_base_model_bit_for_bit(server, session):
    name = _erase(server, session).name
    result = cb.compare(server, session, "a cat", seed=0, num_images=2, steps=2, patch_names=[name], scale=0.0)
    np.testing.assert_array_equal(_pixels(result.before), _pixels(result.after))


def test_compare_composes_several_patches(server, session, tiny_pipe):
    x = _erase(server, session, options=f"{ESD_OPTIONS}\nvariant=x").name
    u = _erase(server, session, options=f"{ESD_OPTIONS}\nvariant=u").name
    both = cb.compare(server, session, "a cat", seed=0, num_images=1, steps=2, patch_names=[x, u], scale=0.5)
    assert "overlap" not in both.message  # ESD-x and ESD-u touch disjoint parameters
    combined = session.patches[x].patch + session.patches[u].patch
    handle = server.catalog.handle("tiny-sd")
    with combined.applied(handle, scale=0.5):
        expected = handle.generate(["a cat"], [0], 2, 7.5)
    np.testing.assert_array_equal(_pixels(both.after), _pixels(cb._display(expected, [0])))
    one = cb.compare(server, session, "a cat", seed=0, num_images=1, steps=2, patch_names=[x], scale=0.5)
    assert not np.array_equal(_pixels(one.after), _pixels(both.after))
    again = _erase(server, session, options=f"{ESD_OPTIONS}\nvariant=x").name
    overlap = cb.compare(server, session, "a cat", seed=0, num_images=1, steps=2, patch_names=[x, again])
    assert "overlap on" in overlap.message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "a" * 201}, "at most 200"),
        ({"num_images": 5}, "Images must be between 1 and 4"),
        ({"steps": 51}, "Steps must be between 1 and 50"),
        ({"scale": 1.5}, "Patch scale must be between"),
        ({"guidance": -1}, "Guidance must be between"),
        ({"patch_names": ["../../etc/passwd"]}, "No patch named"),
    ],
)
def test_compare_refuses_bad_input(server, session, kwargs, message):
    kwargs = {"prompt": "a cat", "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        cb.compare(server, session, **kwargs)


def test_patches_belong_to_their_session_and_model(server, session):
    name = _erase(server, session).name
    other = server.new_session("tiny-sd")
    assert other.folder != session.folder and other.patch_names() == []
    with pytest.raises(ValueError, match="No patch named"):
        cb.compare(server, other, "a cat", steps=2, patch_names=[name])
    cb.select_model(server, session, "tiny-eval")
    assert session.patch_names() == []  # the patch stays with the model it was made on
    with pytest.raises(ValueError, match="made on another model"):
        cb.compare(server, session, "a cat", steps=2, patch_names=[name])


# ---- failures ---------------------------------------------------------------------------------------------------
def test_a_failing_job_returns_a_message_and_leaves_the_app_usable(server, session, tiny_pipe):
    base = state_of(tiny_pipe.unet)

    def explode(fraction, text):
        if fraction > 0:
            raise RuntimeError("disk on fire")

    result, error = cb.run_safely(_erase, server, session, progress=explode)
    assert result is None and error == "**Error (RuntimeError):** disk on fire"
    assert session.patches == {} and not list(session.folder.iterdir())
    assert_bit_equal(state_of(tiny_pipe.unet), base)
    result, error = cb.run_safely(cb.compare, server, None, "a cat")
    assert result is None and "reload the page" in error
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # another thread: the model's lock was released
        name = pool.submit(_erase, server, session).result(timeout=120).name
        after = pool.submit(cb.compare, server, session, "a cat", 0, 1, 2, 7.5, [name]).result(timeout=120)
    assert len(after.after) == 1


# ---- evaluate ---------------------------------------------------------------------------------------------------
def test_evaluate_needs_a_suite(server, session):
    assert cb.eval_targets(server, session) == []
    with pytest.raises(ValueError, match="has no evaluation suite"):
        cb.evaluate(server, session, "style:Photo")


def test_evaluate_shows_ua_ira_cra_and_the_grid(server):
    session = server.new_session("tiny-eval")
    assert cb.eval_targets(server, session) == ["style:Photo", "style:Ink", "object:apple", "object:cup"]
    name = _erase(server, session, concept="Photo style").name
    result = cb.evaluate(server, session, "style:photo", [name], num_seeds=1, steps=2)
    assert result.columns == ["metric", "base", "patched"]
    assert [row[0] for row in result.rows[:4]] == ["ua", "ira", "cra", "ua_heldout"]
    assert all(row[1].endswith("%") and row[2].endswith("%") for row in result.rows[:3])
    assert result.grid_file.is_file() and result.grid_file.parent == session.folder
    saved = json.loads(result.json_file.read_text())
    assert set(saved) == {"base", "patched"} and saved["patched"]["run"]["patch"]["method"] == "esd"
    assert "style:Photo" in result.message and "| ua |" in result.markdown
    base_only = cb.evaluate(server, session, "object:cup", num_seeds=1, steps=2)
    assert base_only.columns == ["metric", "base"]
    with pytest.raises(ValueError, match="is not in suite"):
        cb.evaluate(server, session, "style:Nope", steps=2)
    with pytest.raises(ValueError, match="Seeds must be between 1 and 4"):
        cb.evaluate(server, session, "style:Photo", num_seeds=5, steps=2)


# ---- the layout and the command ---------------------------------------------------------------------------------
def test_method_form_caps_steps_and_lists_only_browser_options(server):
    from erasekit.methods import get_method

    form = cb.method_form(server, "esd")
    defaults = get_method("esd").config_class()
    assert (form.steps, form.lr) == (defaults.steps, defaults.lr)  # under the cap: the method's defaults
    server.limits = Limits(max_erase_steps=50)
    assert cb.method_form(server, "salun").steps == 50
    text = cb.method_form(server, "salun").help
    assert "`mask_ratio`" in text and "`forget_images`" not in text and "`checkpoint_dir`" not in text
    assert cb.default_method(["doco", "esd"]) == "esd" and cb.default_method([]) is None


def test_build_app_wires_every_tab(server):
    pytest.importorskip("gradio")
    from erasekit.demo.app import build_app

    demo = build_app(server)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"model", "erase-button", "patch-file", "lora-file", "compare-button", "before-gallery"} <= ids
    assert {"after-gallery", "eval-button", "eval-table"} <= ids
    assert len(demo.fns) >= 6  # load, model, method, erase, compare, evaluate


def test_cli_demo_defaults_to_loopback_and_checks_the_port(capsys):
    from erasekit.cli.main import build_parser, main

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model_dir) == ("127.0.0.1", 7860, [])
    assert main(["demo", "--port", "70000"]) == 2
    assert "between 1 and 65535" in capsys.readouterr().err


def test_run_safely_formats_errors():
    assert cb.run_safely(lambda: 3) == (3, None)
    assert cb.run_safely(int, "x")[1].startswith("**Error:** invalid literal")
    assert cb.format_error(KeyError("k")) == "**Error (KeyError):** 'k'"
