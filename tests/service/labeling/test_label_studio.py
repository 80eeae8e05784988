"""Label Studio's config, label matching, results and the reverse (annotation -> mask)."""

from __future__ import annotations

import numpy as np
import pytest

from service.labeling.label_studio import (
    LabelConfig,
    LabelStudioError,
    Region,
    annotation_mask,
    match_labels,
    prediction,
)
from service.labeling.uncertainty import boundary, task_score

CONFIG = """<View>
  <Image name="photo" value="$img"/>
  <brushlabels name="b" toName="photo"><Label value="sky"/><Label value="Tree"/></brushlabels>
  <PolygonLabels name="p" toName="photo"><Label value="tree"/></PolygonLabels>
  <Choices name="c" toName="photo"><Choice value="x"/></Choices>
</View>"""


def test_config_controls() -> None:
    config = LabelConfig.parse(CONFIG)
    kinds = [(c.kind, c.name, c.to_name, c.image_key, c.labels) for c in config.controls]
    assert kinds == [
        ("brushlabels", "b", "photo", "img", ("sky", "Tree")),
        ("polygonlabels", "p", "photo", "img", ("tree",)),
    ]


@pytest.mark.parametrize(
    ("xml", "text"),
    [
        ("<View><Image", "not valid XML"),
        (
            '<View><Image name="i" value="$i"/><Labels name="l" toName="i"/></View>',
            "no BrushLabels",
        ),
        ('<View><BrushLabels name="b" toName="missing"/></View>', "no BrushLabels"),
    ],
)
def test_config_errors(xml: str, text: str) -> None:
    with pytest.raises(LabelStudioError, match=text):
        LabelConfig.parse(xml)


def test_match_exact_then_ignoring_case() -> None:
    match = match_labels(["background", "sky", "tree"], ["sky", "Tree", "TREE", "car"])
    assert match.labels == (None, "sky", "Tree")
    assert match.model_only == ("background",) and match.config_only == ("TREE", "car")
    assert "background" in match.report() and "car" in match.report()
    assert match_labels(["a"], ["a"]).report() == ""


def _mask() -> np.ndarray:
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 10:50] = 1  # sky
    mask[25:38, 3:30] = 2  # tree with a hole of sky
    mask[29:33, 10:14] = 1
    return mask


def test_prediction_brush_regions_round_trip() -> None:
    config = LabelConfig.parse(CONFIG)
    classes = ["background", "sky", "tree"]
    controls = [(c, match_labels(classes, c.labels)) for c in config.controls[:1]]
    confidence = np.full((40, 60), 0.5, np.float32)
    confidence[_mask() == 1] = 0.9
    answer = prediction(controls, Region(_mask(), confidence), "v1")
    assert answer["model_version"] == "v1"
    # The task's score leaves out the pixels at class boundaries (service/labeling/uncertainty).
    interior = ~boundary(_mask())
    assert answer["score"] == pytest.approx(float(confidence[interior].mean()), abs=1e-4)
    labels = [r["value"]["brushlabels"][0] for r in answer["result"]]
    assert labels == ["sky", "Tree"]  # background has no label: no region
    assert answer["result"][0]["score"] == pytest.approx(0.9)
    assert len({r["id"] for r in answer["result"]}) == 2
    mask, unknown = annotation_mask(answer["result"], {"sky": 1, "Tree": 2}, fill=0)
    assert not unknown
    np.testing.assert_array_equal(mask, _mask())


def test_polygon_regions_in_percent_and_back() -> None:
    config = LabelConfig.parse(CONFIG)
    polygon = config.controls[1]
    match = match_labels(["background", "sky", "tree"], polygon.labels)
    answer = prediction([(polygon, match)], Region(_mask(), tolerance=0.0), "v")
    assert answer["score"] is None
    (region,) = answer["result"]  # one tree polygon; Label Studio polygons have no holes
    assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == ["tree"]
    points = np.array(region["value"]["points"])
    assert points[:, 0].min() == pytest.approx(100 * 3 / 60) and points[
        :, 1
    ].max() == pytest.approx(95)
    mask, _ = annotation_mask(answer["result"], {"tree": 2}, fill=0)
    tree = (_mask() == 2) | (_mask() == 1) & (np.arange(40)[:, None] >= 25)  # hole filled
    np.testing.assert_array_equal(mask == 2, tree)


def test_annotation_mask_paints_in_order_and_reports_unknown() -> None:
    full = {"original_width": 4, "original_height": 2, "type": "polygonlabels"}
    left = {
        **full,
        "value": {"points": [[0, 0], [50, 0], [50, 100], [0, 100]], "polygonlabels": ["a"]},
    }
    every = {
        **full,
        "value": {"points": [[0, 0], [100, 0], [100, 100], [0, 100]], "polygonlabels": ["b"]},
    }
    odd = {**full, "value": {"points": [[0, 0], [100, 0], [100, 100]], "polygonlabels": ["zebra"]}}
    mask, unknown = annotation_mask([every, left, odd], {"a": 1, "b": 2}, fill=255)
    np.testing.assert_array_equal(mask, [[1, 1, 2, 2], [1, 1, 2, 2]])
    assert unknown == {"zebra"}


@pytest.mark.parametrize(
    ("results", "text"),
    [
        ([{"type": "brushlabels", "value": {"brushlabels": ["a"], "rle": [1]}}], "original_width"),
        (
            [
                {
                    "type": "brushlabels",
                    "original_width": 2,
                    "original_height": 2,
                    "value": {"brushlabels": ["a"]},
                }
            ],
            "without an 'rle'",
        ),
        (
            [
                {
                    "type": "brushlabels",
                    "original_width": 2,
                    "original_height": 2,
                    "value": {"brushlabels": ["a"], "rle": [0, 0, 0, 16, 1, 2, 3]},
                },
            ],  # fmt: skip
            "brush region of 'a'",
        ),
        ([], "no brush or polygon region"),
    ],
)
def test_annotation_mask_errors(results, text: str) -> None:
    with pytest.raises(LabelStudioError, match=text):
        annotation_mask(results, {"a": 0}, fill=255)


def test_annotation_sizes_must_agree() -> None:
    region = {"type": "polygonlabels", "original_width": 4, "original_height": 2}
    region["value"] = {"points": [[0, 0], [50, 0], [50, 100]], "polygonlabels": ["a"]}
    with pytest.raises(LabelStudioError, match="disagree on its size"):
        annotation_mask([region], {"a": 0}, fill=255, size=(5, 2))


def test_task_score_ranks_interior_doubt_below_boundary_doubt() -> None:
    """Two images with the same mean confidence: the one unsure inside a region scores lower
    than the one unsure only along region edges (which every model is)."""
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 1
    edge = boundary(mask)
    assert edge.sum() == 2 * 40 and edge[:, 19:21].all()
    at_edges = np.full(mask.shape, 0.95, np.float32)
    at_edges[edge] = 0.5
    inside = np.full(mask.shape, 0.95, np.float32)
    inside[5:9, 0:20] = 0.5  # as many unsure pixels (80), inside the first region
    assert at_edges.mean() == pytest.approx(inside.mean())
    assert task_score(mask, inside) < task_score(mask, at_edges) == pytest.approx(0.95)
    assert task_score(mask, None) is None
    # all boundary (a checkerboard): the plain mean
    checker = np.indices((4, 4)).sum(0) % 2
    assert task_score(checker, np.full((4, 4), 0.7, np.float32)) == pytest.approx(0.7)
