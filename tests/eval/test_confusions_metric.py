"""The ``confusions`` metric: where the classifiers' mistakes go and where an erased target survives."""

import pytest
from eval_fixtures import OBJECTS, STYLES, tiny_suite

from erasekit.eval import Target, evaluate, list_metrics
from erasekit.eval.metrics import EvalContext, confusion_counts, confusions, unlearncanvas_scores


def _rec(style, obj, seed, style_pred, object_pred):
    return {"style": style, "object": obj, "seed": seed, "style_pred": style_pred, "object_pred": object_pred}


RECORDS = [  # a Photo erasure that sent most Photo images to Ink and dragged one apple along
    _rec("Photo", "apple", 0, "Ink", "apple"),
    _rec("Photo", "apple", 1, "Photo", "cup"),  # the target survived here
    _rec("Photo", "cup", 0, "Ink", "cup"),
    _rec("Photo", "cup", 1, "Ink", "cup"),
    _rec("Ink", "apple", 0, "Ink", "apple"),
    _rec("Ink", "apple", 1, "Ink", "apple"),
    _rec("Ink", "cup", 0, "Photo", "cup"),
    _rec("Ink", "cup", 1, "Ink", "cup"),
]


def test_confusions_known_answer_with_a_target():
    suite = tiny_suite(with_clip=False)
    out = confusions(EvalContext(suite, Target("style", "Photo"), RECORDS, images=None))
    assert out["style_confusions"] == {"Photo -> Ink": 3, "Ink -> Photo": 1}  # most frequent first
    assert list(out["style_confusions"]) == ["Photo -> Ink", "Ink -> Photo"]
    assert out["object_confusions"] == {"apple -> cup": 1}
    assert out["target_predictions"] == {"Ink": 3, "Photo": 1}
    assert out["target_survived_in"] == ["apple/1"]
    # consistent with UA: the surviving cells are exactly the target images still classified as the target
    ua = unlearncanvas_scores(RECORDS, suite, Target("style", "Photo"))["ua"]
    assert len(out["target_survived_in"]) == pytest.approx((1 - ua) * 4)


def test_confusions_for_an_object_target_and_without_a_target():
    suite = tiny_suite(with_clip=False)
    out = confusions(EvalContext(suite, Target("object", "apple"), RECORDS, images=None))
    assert out["target_predictions"] == {"apple": 3, "cup": 1}
    assert out["target_survived_in"] == ["Photo/0", "Ink/0", "Ink/1"]  # cells named by style and seed
    base = confusions(EvalContext(suite, None, RECORDS, images=None))
    assert set(base) == {"style_confusions", "object_confusions"}
    perfect = [dict(r, style_pred=r["style"], object_pred=r["object"]) for r in RECORDS]
    assert confusion_counts(perfect, "style") == {} and confusion_counts(perfect, "object") == {}


def test_confusions_ties_are_ordered_by_name():
    records = [_rec("Ink", "cup", 0, "Photo", "cup"), _rec("Photo", "cup", 0, "Ink", "cup")]
    assert list(confusion_counts(records, "style")) == ["Ink -> Photo", "Photo -> Ink"]


def test_confusions_is_registered_and_runs_in_evaluate(tiny_pipe):
    assert "confusions" in list_metrics()
    suite = tiny_suite(with_clip=False)
    report = evaluate(
        tiny_pipe, suite, "style:Ink", seeds=[0], steps=2, metrics=["ua", "confusions"], progress=False, heldout=False
    )
    m = report.metrics
    grid = [r for r in report.records if "template" not in r]
    assert sum(m["target_predictions"].values()) == len(OBJECTS)  # every Ink image of the grid, one seed
    assert len(m["target_survived_in"]) == round((1 - m["ua"]) * len(OBJECTS))
    mistakes = sum(r["style_pred"] != r["style"] for r in grid)
    assert sum(m["style_confusions"].values()) == mistakes and len(grid) == len(STYLES) * len(OBJECTS)
