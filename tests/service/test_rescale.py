"""service.rescale: the bit-depth rule every path shares, and the model's declared input range."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.errors import MetadataError
from service.metadata import ModelMetadata
from service.rescale import (
    MODEL_INPUT_RANGE,
    SAMPLE_SIDE,
    RescaleError,
    choose_scaling,
    decimate,
    parse_rescale,
    sample_shape,
)


def test_parse_rescale_accepts_min_max_and_nothing() -> None:
    assert parse_rescale("0,4095") == (0.0, 4095.0)
    assert parse_rescale(" -1.5, 2e3 ") == (-1.5, 2000.0)
    assert parse_rescale(None) is None and parse_rescale("  ") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "MIN,MAX"),
        ("1,2,3", "MIN,MAX"),
        ("5,5", "below"),
        ("9,1", "below"),
        ("nan,1", "finite"),
    ],
)
def test_parse_rescale_refuses_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(RescaleError, match=message):
        parse_rescale(text)


def never_sampled():
    raise AssertionError("8-bit data and fixed ranges need no sample")


def test_eight_bit_is_used_as_is_and_a_fixed_range_applies_to_any_type() -> None:
    scaling = choose_scaling(["uint8"] * 3, 3, None, never_sampled)
    assert scaling.as_is and scaling.describe("uint8") == "uint8 input used as is (8-bit)"
    data = np.array([[[0, 2040, 4080, 5000]]], dtype=np.uint16)
    fixed = choose_scaling(["uint16"], 1, (0, 4080), never_sampled)
    assert fixed.apply(data).tolist() == [[[0, 128, 255, 255]]]  # 127.5 -> 128 (rint)
    assert "rescale=0,4080" in fixed.describe("uint16")


def test_percentiles_come_from_valid_pixels_and_scale_with_the_data() -> None:
    rng = np.random.default_rng(0)
    eight = rng.integers(10, 240, (40, 30, 3)).astype(np.uint8)
    nodata = np.zeros((40, 30), bool)
    nodata[:, :5] = True
    results = []
    for factor, dtype in ((257, np.uint16), (16, np.uint16), (1 / 255, np.float32)):
        wide = (eight.astype(np.float64) * factor).astype(dtype)
        wide[nodata] = 0
        scaling = choose_scaling([wide.dtype], 3, None, lambda w=wide: decimate(w, ~nodata))
        valid = wide[~nodata].astype(np.float64)
        for band, (lo, hi) in enumerate(scaling.ranges):
            assert (lo, hi) == pytest.approx(tuple(np.percentile(valid[:, band], (2, 98))))
        assert scaling.rule.startswith("percentile") and "percentile" in scaling.describe(dtype)
        results.append(scaling.apply_last(wide))
    # the same photo at three depths: the same 8-bit pixels, give or take a rounding step
    assert np.abs(results[0].astype(int) - results[1]).max() <= 1
    assert np.abs(results[0].astype(int) - results[2]).max() <= 1


def test_no_valid_pixel_is_an_error_naming_the_fix() -> None:
    pixels = np.zeros((4, 4, 1), np.uint16)
    with pytest.raises(RescaleError, match="fixed range"):
        choose_scaling(["uint16"], 1, None, lambda: decimate(pixels, np.zeros((4, 4), bool)))


def test_the_sample_is_every_pixel_up_to_the_side_then_decimated() -> None:
    assert sample_shape(544, 509) == (544, 509)
    assert sample_shape(4 * SAMPLE_SIDE, 2 * SAMPLE_SIDE) == (SAMPLE_SIDE, SAMPLE_SIDE // 2)
    pixels = np.arange(12 * 8).reshape(12, 8, 1)
    sample, valid = decimate(pixels, None)
    assert np.array_equal(sample[0], pixels[:, :, 0]) and valid.all()


def test_input_range_is_optional_zero_to_255_and_nothing_else(metadata_values) -> None:
    values = metadata_values(3, 2, 1)
    props = {k: json.dumps(v) for k, v in values.items() if k != "input_range"}
    assert ModelMetadata.from_props(props).input_range == MODEL_INPUT_RANGE  # older files
    assert json.loads(ModelMetadata.from_props(props).to_props()["input_range"]) == [0.0, 255.0]
    with pytest.raises(MetadataError, match="input_range") as info:
        ModelMetadata.from_props({**props, "input_range": "[0, 65535]"})
    assert "0..65535" in str(info.value) and "0..255" in str(info.value)
    with pytest.raises(MetadataError, match="input_range"):
        ModelMetadata.from_props({**props, "input_range": "[0]"})
