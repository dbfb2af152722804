"""MiniCanvas data: names, captions, deterministic rendering, the dataset, export and preview."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from erasekit_worlds.minicanvas import (
    HELDOUT_OFFSET,
    HELDOUT_TEMPLATES,
    OBJECTS,
    PHOTO,
    STYLES,
    TRAIN_TEMPLATES,
    UNLEARNCANVAS_TEMPLATE,
    MiniCanvasDataset,
    caption,
    export_unlearncanvas,
    parse_exclude,
    preview_grid,
    render,
    resolve_object,
    resolve_style,
    stable_seed,
    style_folder,
)
from erasekit_worlds.minicanvas.objects import register_object
from erasekit_worlds.minicanvas.styles import register_style

# ---------------------------------------------------------------------------------------------------- names


def test_catalogue_sizes_and_photo_first():
    assert len(STYLES) >= 11 and STYLES[0] == PHOTO == "Photo"
    assert len(OBJECTS) >= 10
    assert len(set(STYLES)) == len(STYLES) and len(set(OBJECTS)) == len(OBJECTS)
    assert all(o == o.lower() and o.isalpha() for o in OBJECTS)


def _clip_words() -> set[str]:
    # read open_clip's BPE file without importing open_clip (its import pulls in torchvision and is slow)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    return {"".join(m.split()) for m in merges if m.endswith("</w>")}


def test_every_name_is_a_whole_clip_token():
    words = _clip_words()
    names = [w for s in STYLES for w in s.split()] + list(OBJECTS)
    assert [n for n in names if f"{n.lower()}</w>" not in words] == []


def test_lookup_is_case_insensitive_and_accepts_underscores():
    assert resolve_style("pop_art") == resolve_style("POP ART") == "Pop Art"
    assert resolve_object("Apple") == "apple"
    assert style_folder("stained glass") == "Stained_Glass"


@pytest.mark.parametrize(
    "call, valid",
    [
        (lambda: render("Watercolour", "apple", 0), "Watercolor"),
        (lambda: render("Photo", "apples", 0), "apple"),
        (lambda: MiniCanvasDataset(styles=["Cubism"]), "Pop Art"),
        (lambda: caption("Photo", "dog"), "house"),
    ],
)
def test_unknown_names_list_the_valid_ones(call, valid):
    with pytest.raises(ValueError, match=valid):
        call()


def test_registering_a_bad_or_duplicate_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_object("apple")
    with pytest.raises(ValueError, match="already registered"):
        register_style("Photo")
    with pytest.raises(ValueError):
        register_object("Big Apple")
    with pytest.raises(ValueError):
        register_style("pop art")


# ---------------------------------------------------------------------------------------------------- captions


def test_templates():
    assert UNLEARNCANVAS_TEMPLATE == "A {object} image in {style} style."
    assert UNLEARNCANVAS_TEMPLATE in TRAIN_TEMPLATES
    assert len(TRAIN_TEMPLATES) >= 6 and len(HELDOUT_TEMPLATES) >= 3
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        text = caption("Pop Art", "apple", t)
        assert "Pop Art" in text and "apple" in text.lower() and "{" not in text


def test_caption_wording():
    assert caption("photo", "Apple") == "A apple image in Photo style."
    assert caption("Ink", "apple", "{a_object} in {style}.") == "An apple in Ink."
    assert caption("Ink", "house", "{a_object} in {style}.") == "A house in Ink."
    with pytest.raises(ValueError, match="a_object"):
        caption("Ink", "house", "{thing} in {style}")


# ---------------------------------------------------------------------------------------------------- rendering


def test_stable_seed_is_pinned():
    # BLAKE2b, not Python's salted hash(): the same value in every process
    assert stable_seed("content", "apple", 0, 0) == stable_seed("content", "apple", 0, 0)
    assert stable_seed("content", "apple", 0, 0) == 5520447663022304132


def test_render_shape_dtype_and_determinism():
    a = render("Watercolor", "apple", 3, seed=7)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render("watercolor", "Apple", 3, seed=7))
    assert not np.array_equal(a, render("Watercolor", "apple", 3, seed=8))
    assert not np.array_equal(a, render("Watercolor", "apple", 4, seed=7))


def test_every_pair_renders_a_non_trivial_image():
    for style in STYLES:
        for obj in OBJECTS:
            img = render(style, obj, 0).astype(np.float32)
            assert img.std() > 10, (style, obj)


def test_indices_vary_within_a_pair():
    imgs = [render("Photo", "car", i).astype(np.int16) for i in range(6)]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).mean() > 5


def test_styles_differ_on_the_same_scene():
    imgs = {s: render(s, "fish", 0).astype(np.int16) for s in STYLES}
    for i, s in enumerate(STYLES):
        for t in STYLES[i + 1 :]:
            assert np.abs(imgs[s] - imgs[t]).mean() > 10, (s, t)


def test_render_rejects_bad_index():
    with pytest.raises(ValueError, match="index"):
        render("Photo", "apple", -1)


# ---------------------------------------------------------------------------------------------------- dataset


def test_dataset_items():
    ds = MiniCanvasDataset(styles=["Pop Art", "photo"], objects=["cup", "star"], per_pair=2, seed=3)
    assert len(ds) == 8
    item = ds[0]
    assert set(item) >= {"pixel_values", "caption", "style", "object", "style_id", "object_id"}
    px = item["pixel_values"]
    assert px.shape == (3, 64, 64) and px.dtype == torch.float32
    assert -1.0 <= px.min() and px.max() <= 1.0 and px.max() > px.min()
    assert item["style"] == "Pop Art" and item["style_id"] == STYLES.index("Pop Art")
    assert item["object"] == "cup" and item["object_id"] == OBJECTS.index("cup")
    captions = {caption(item["style"], item["object"], t) for t in TRAIN_TEMPLATES}
    assert item["caption"] in captions
    again = MiniCanvasDataset(styles=["Pop Art", "photo"], objects=["cup", "star"], per_pair=2, seed=3)[0]
    assert again["caption"] == item["caption"] and torch.equal(again["pixel_values"], px)
    assert ds[-1]["style"] == "Photo" and ds[-1]["object"] == "star"
    with pytest.raises(IndexError):
        ds[8]


def test_captions_are_sampled_from_several_templates():
    ds = MiniCanvasDataset(styles=["Ink"], objects=["boat"], per_pair=40)
    seen = {ds[i]["caption"] for i in range(len(ds))}
    assert len(seen) >= 4


def test_heldout_split_is_disjoint_and_uses_heldout_templates():
    kw = dict(styles=["Neon"], objects=["bird"], per_pair=5)
    train = MiniCanvasDataset(**kw)
    held = MiniCanvasDataset(split="heldout", templates="heldout", **kw)
    train_idx = {train.item_key(i)[2] for i in range(len(train))}
    held_idx = {held.item_key(i)[2] for i in range(len(held))}
    assert train_idx == set(range(5)) and min(held_idx) >= HELDOUT_OFFSET
    assert not train_idx & held_idx
    held_captions = {caption("Neon", "bird", t) for t in HELDOUT_TEMPLATES}
    assert all(held[i]["caption"] in held_captions for i in range(len(held)))
    assert not torch.equal(train[0]["pixel_values"], held[0]["pixel_values"])


def test_exclude_drops_concepts_and_validates():
    ds = MiniCanvasDataset(per_pair=1, exclude=["style:watercolor", "object:Apple"])
    assert "Watercolor" not in ds.styles and "apple" not in ds.objects
    assert len(ds) == (len(STYLES) - 1) * (len(OBJECTS) - 1)
    assert parse_exclude("style:pop_art") == ({"Pop Art"}, set())
    with pytest.raises(ValueError, match="Watercolor"):
        MiniCanvasDataset(exclude=["style:Watercolour"])
    with pytest.raises(ValueError, match="apple"):
        MiniCanvasDataset(exclude=["object:apples"])
    with pytest.raises(ValueError, match="style:<name>"):
        MiniCanvasDataset(exclude=["colour:red"])
    with pytest.raises(ValueError, match="style:<name>"):
        MiniCanvasDataset(exclude=["Watercolor"])
    with pytest.raises(ValueError, match="no"):
        MiniCanvasDataset(styles=["Ink"], exclude=["style:Ink"])


def test_dataset_argument_validation():
    with pytest.raises(ValueError, match="heldout"):
        MiniCanvasDataset(split="test")
    with pytest.raises(ValueError, match="heldout"):
        MiniCanvasDataset(templates="eval")
    with pytest.raises(ValueError, match="per_pair"):
        MiniCanvasDataset(per_pair=0)
    with pytest.raises(TypeError):
        MiniCanvasDataset(styles="Ink")


def test_transform_is_applied_to_pixels():
    ds = MiniCanvasDataset(styles=["Ink"], objects=["cup"], per_pair=1, transform=lambda t: t.flip(-1))
    plain = MiniCanvasDataset(styles=["Ink"], objects=["cup"], per_pair=1)
    assert torch.equal(ds[0]["pixel_values"], plain[0]["pixel_values"].flip(-1))


# ---------------------------------------------------------------------------------------------------- files


def test_export_unlearncanvas_layout(tmp_path):
    out = export_unlearncanvas(tmp_path / "uc", per_pair=2, seed=1, styles=["Pop Art", "Photo"], objects=["fish"])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["Photo/fish/0.png", "Photo/fish/1.png", "Pop_Art/fish/0.png", "Pop_Art/fish/1.png"]
    assert np.array_equal(np.asarray(Image.open(out / "Pop_Art/fish/1.png")), render("Pop Art", "fish", 1, seed=1))
    meta = json.loads((out / "minicanvas.json").read_text())
    assert meta["seed"] == 1 and meta["style_folders"]["Pop Art"] == "Pop_Art"
    assert not list(out.rglob("*.tmp"))


def test_preview_grid(tmp_path):
    path = preview_grid(tmp_path / "grid.png", zoom=1, styles=["Photo", "Ink"], objects=["cup", "star", "tree"])
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.width > 3 * 64 and img.height > 2 * 64


def test_data_check_benchmark_runs_in_process(tmp_path):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "minicanvas_data_check.py"
    spec = importlib.util.spec_from_file_location("minicanvas_data_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--out", str(tmp_path / "r.json"), "--train-per-pair", "1", "--eval-per-pair", "1", "--epochs", "1"]
    try:  # main() sets the process-wide thread count too; tests/conftest.py gives it back after every test
        result = module.main(
            argv + ["--width", "4", "--speed-images", "11", "--threads", str(torch.get_num_threads())]
        )
    finally:
        torch.set_flush_denormal(False)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["n_train"] == saved["n_eval"] == len(STYLES) * len(OBJECTS)
    assert 0.0 <= result["heldout"]["style_accuracy"] <= 1.0 and saved["render"]["ms_per_image"] > 0
