"""Label Studio's brush RLE: our encoder and decoder against vectors Label Studio's own encoder
wrote (tests/service/data/label_studio_brush_rle.json, from label-studio-sdk's
``converter.brush.encode_rle``), and round trips at sizes past the widest run field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.labeling import brush_rle
from service.labeling.brush_rle import BrushRleError

VECTORS = json.loads(
    (Path(__file__).parents[1] / "data" / "label_studio_brush_rle.json").read_text()
)["cases"]


@pytest.mark.parametrize("case", [c for c in VECTORS if "mask" in c], ids=lambda c: str(c["width"]))
def test_decodes_label_studio_encoded_masks(case) -> None:
    mask = np.array(case["mask"], bool)
    decoded = brush_rle.decode(case["rle"], case["width"], case["height"])
    np.testing.assert_array_equal(decoded, mask)


def test_decodes_literal_blocks() -> None:
    case = next(c for c in VECTORS if "values" in c)
    np.testing.assert_array_equal(brush_rle.decode_values(case["rle"]), case["values"])


@pytest.mark.parametrize("case", [c for c in VECTORS if "mask" in c], ids=lambda c: str(c["width"]))
def test_encodes_what_label_studio_decodes_alike(case) -> None:
    """Our encoding of the same mask decodes to the same RGBA values as Label Studio's."""
    mask = np.array(case["mask"], bool)
    ours = brush_rle.decode_values(brush_rle.encode(mask))
    theirs = brush_rle.decode_values(case["rle"])
    np.testing.assert_array_equal(ours, theirs)
    assert set(np.unique(ours).tolist()) <= {0, 255}


@pytest.mark.parametrize(
    ("height", "width", "fill"),
    [(1, 1, 1.0), (1, 1, 0.0), (97, 130, 0.5), (300, 400, 1.0), (300, 400, 0.999), (513, 257, 0.0)],
)
def test_round_trip(height: int, width: int, fill: float) -> None:
    rng = np.random.default_rng(height * width)
    mask = rng.random((height, width)) < fill
    rle = brush_rle.encode(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in rle)
    np.testing.assert_array_equal(brush_rle.decode(rle, width, height), mask)


def test_long_runs_split_at_the_widest_field() -> None:
    """300x400 painted = 480,000 equal values: more than one 16-bit run block."""
    mask = np.ones((300, 400), bool)
    values = brush_rle.decode_values(brush_rle.encode(mask))
    assert values.size == 300 * 400 * 4 and (values == 255).all()


def test_wrong_size_is_named() -> None:
    rle = brush_rle.encode(np.ones((4, 5), bool))
    with pytest.raises(BrushRleError, match="holds 80 values; a 4x6 RGBA mask needs 96"):
        brush_rle.decode(rle, 4, 6)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ([1, 2], "shorter than its header"),
        ([300, 1, 2, 3, 4, 5, 6, 7], "byte values"),
        ("not a list", "byte values"),
    ],
)
def test_malformed(rle, message: str) -> None:
    with pytest.raises(BrushRleError, match=message):
        brush_rle.decode_values(rle)


def test_truncated_stream() -> None:
    rle = brush_rle.encode(np.eye(20, dtype=bool))
    with pytest.raises(BrushRleError, match="ends in the middle|runs past"):
        brush_rle.decode_values(rle[: len(rle) // 2])


def test_needs_a_2d_mask() -> None:
    with pytest.raises(ValueError, match="2-D"):
        brush_rle.encode(np.ones((2, 2, 2), bool))
