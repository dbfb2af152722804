"""The MiniCanvas evaluation suite read from a world folder."""

import pytest


def test_minicanvas_suite_from_a_world_folder(tmp_path):
    from erasekit_worlds.minicanvas import OBJECTS, STYLES
    from erasekit_worlds.minicanvas.classifier import ClassifierConfig, ImageClassifier
    from erasekit_worlds.minicanvas.suite import minicanvas_suite

    with pytest.raises(ValueError, match="erasekit world train minicanvas"):
        minicanvas_suite(tmp_path)
    (tmp_path / "classifiers").mkdir()
    for name, labels in (("style", STYLES), ("object", OBJECTS)):
        ImageClassifier(ClassifierConfig(), list(labels)).save(tmp_path / "classifiers" / f"{name}.safetensors")
    suite = minicanvas_suite(tmp_path)
    assert suite.styles == list(STYLES) and suite.objects == list(OBJECTS) and suite.clip is None
    assert suite.caption("Pop Art", "apple") == "A apple image in Pop Art style."
    assert suite.parse_target("style:pop art").name == "Pop Art"
    refs = suite.reference_images(3)
    assert refs.shape == (3, 3, 64, 64) and 0 <= refs.min() and refs.max() <= 1
