"""Mask encoders: lossless index PNGs, palette colours, overlays, per-class summaries."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from service.formats.raster import (
    borders,
    color_png,
    colorize,
    index_png,
    outline,
    outline_png,
    overlay,
    overlay_png,
)
from service.formats.report import class_pixel_counts, class_report

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]


def read_png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(data))


def test_index_png_uint8_is_lossless() -> None:
    mask = np.random.default_rng(0).integers(0, 256, (17, 23), dtype=np.uint8)
    image = read_png(index_png(mask))
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), mask)


def test_index_png_uint16_keeps_classes_above_255() -> None:
    mask = np.array([[0, 255, 256, 299], [1000, 65535, 7, 3]], dtype=np.uint16)
    image = read_png(index_png(mask))
    assert image.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(image).astype(np.int64), mask)


def test_color_png_uses_the_palette() -> None:
    mask = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    rgb = np.asarray(read_png(color_png(mask, PALETTE)).convert("RGB"))
    np.testing.assert_array_equal(rgb, np.asarray(PALETTE, np.uint8)[mask])


def test_color_png_with_many_classes_is_rgb() -> None:
    palette = [[i % 256, (i * 7) % 256, (i * 13) % 256] for i in range(300)]
    mask = np.array([[299, 0, 256]], dtype=np.uint16)
    image = read_png(color_png(mask, palette))
    assert image.mode == "RGB"
    assert np.asarray(image)[0].tolist() == [palette[299], palette[0], palette[256]]


def test_colorize_out_of_palette_is_black() -> None:
    assert colorize(np.array([[5]], np.uint8), PALETTE)[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_overlay_blends(dtype) -> None:
    grey = {np.uint8: 100, np.uint16: 100 * 257, np.float32: 100 / 255}[dtype]
    pixels = np.full((2, 2, 1), grey, dtype=dtype)
    mask = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    assert (overlay(pixels, mask, PALETTE, alpha=0.0) == 100).all()
    np.testing.assert_array_equal(overlay(pixels, mask, PALETTE, 1.0), colorize(mask, PALETTE))
    half = overlay(pixels, mask, PALETTE, 0.5).astype(int)
    expected = (100 + np.asarray(PALETTE)[mask]) / 2
    assert np.abs(half - expected).max() <= 1


def test_overlay_png_drops_alpha_and_checks_sizes() -> None:
    pixels = np.zeros((3, 4, 4), np.uint8)
    mask = np.ones((3, 4), np.uint8)
    image = read_png(overlay_png(pixels, mask, PALETTE))
    assert image.mode == "RGB" and image.size == (4, 3)
    with pytest.raises(ValueError, match="sizes differ"):
        overlay(pixels, mask[:2], PALETTE)
    with pytest.raises(ValueError, match="alpha"):
        overlay(pixels, mask, PALETTE, alpha=1.5)


def test_class_report_counts_every_pixel() -> None:
    mask = np.array([[0, 0, 2], [2, 2, 2]], dtype=np.uint8)
    result = class_report(mask, ["bg", "cat", "dog"])
    json.dumps(result)  # JSON-able
    assert (result["height"], result["width"], result["pixels"]) == (2, 3, 6)
    rows = result["classes"]
    assert [r["name"] for r in rows] == ["bg", "cat", "dog"]
    assert [r["pixels"] for r in rows] == [2, 0, 4]
    assert sum(r["pixels"] for r in rows) == 6
    assert sum(r["fraction"] for r in rows) == pytest.approx(1.0)


def test_encoders_reject_non_masks() -> None:
    with pytest.raises(ValueError, match="mask"):
        index_png(np.zeros((2, 2), np.int64))


def test_class_report_counts_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.formats.report

    monkeypatch.setattr(service.formats.report, "_COUNT_PIXELS", 7)
    mask = np.random.default_rng(1).integers(0, 20, (13, 11), dtype=np.uint8)  # > 16: bincount
    rows = class_report(mask, [str(i) for i in range(20)])["classes"]
    assert [r["pixels"] for r in rows] == np.bincount(mask.ravel(), minlength=20).tolist()


@pytest.mark.parametrize("classes", [1, 3, 16, 17, 300])
def test_class_pixel_counts_count_every_class(classes: int) -> None:
    dtype = np.uint8 if classes <= 256 else np.uint16
    mask = np.random.default_rng(classes).integers(0, classes, (31, 17)).astype(dtype)
    expected = [int((mask == k).sum()) for k in range(classes)]
    assert class_pixel_counts(mask, classes).tolist() == expected


def test_a_json_output_reuses_the_counts_it_is_given() -> None:
    from service.formats.registry import EncodeRequest, get_encoder

    mask = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    given = np.array([4, 0], dtype=np.int64)  # not the mask's: shows they were not recounted
    request = EncodeRequest(mask, None, PALETTE[:2], ["a", "b"], counts=given)
    rows = json.loads(get_encoder("json").encode(request))["classes"]
    assert [r["pixels"] for r in rows] == [4, 0]


def test_encoder_table_serves_every_format() -> None:
    from service.errors import GeoInputError
    from service.formats.registry import ENCODERS, EncodeRequest, parse_formats

    mask = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    pixels = np.full((2, 2, 3), 200, dtype=np.uint8)
    palette = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    confidence = np.array([[1.0, 0.5], [0.75, 0.4]], dtype=np.float32)
    request = EncodeRequest(
        mask, pixels, palette, ["a", "b", "c"], info={"model": "m"}, confidence=confidence
    )
    assert set(ENCODERS) == {
        "index",
        "color",
        "overlay",
        "outline",
        "json",
        "coco-rle",
        "polygons",
        "geojson",
        "geotiff",
        "scores",
    }
    assert len({e.suffix for e in ENCODERS.values()}) == len(ENCODERS)
    for encoder in ENCODERS.values():
        if (
            encoder.name == "geotiff"
        ):  # needs a georeferenced input: tests/service/http/test_geo_http
            with pytest.raises(GeoInputError, match="georeferenced"):
                encoder.encode(request)
            continue
        data = encoder.encode(request)
        if encoder.media_type == "image/png":
            assert Image.open(io.BytesIO(data)).size == (2, 2)
        else:
            report = json.loads(data)
            assert report["model"] == "m" and report["width"] == 2
    assert parse_formats("json, index,json") == ["json", "index"]
    with pytest.raises(
        ValueError, match="choose from index, color, overlay, outline, json, coco-rle"
    ):
        parse_formats("index,jpeg")


def test_outline_draws_both_sides_of_each_border_in_the_class_colours() -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[:, 4:] = 1  # a vertical border between columns 3 and 4
    mask[4:, 4:] = 2  # and a horizontal one between rows 3 and 4 on the right
    pixels = np.full((6, 8), 77, dtype=np.uint8)  # grey input: replicated to RGB
    pixels.setflags(write=False)  # decoded images may be read-only views
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    out = outline(pixels, mask, palette)
    expected_edge = np.zeros((6, 8), dtype=bool)
    expected_edge[:, 3:5] = True
    expected_edge[3:5, 4:] = True
    assert np.array_equal(borders(mask), expected_edge)
    assert out[expected_edge].tolist() == colorize(mask, palette)[expected_edge].tolist()
    assert (out[~expected_edge] == 77).all()  # the image itself everywhere else
    decoded = np.asarray(Image.open(io.BytesIO(outline_png(pixels, mask, palette))))
    assert np.array_equal(decoded, out)
    with pytest.raises(ValueError, match="sizes differ"):
        outline(pixels[:5], mask, palette)


def test_outline_is_the_same_when_computed_in_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((37, 23)) * 3).astype(np.uint8)
    pixels = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    pixels.setflags(write=False)
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    whole = outline(pixels, mask, palette)
    monkeypatch.setattr("service.formats.raster._OVERLAY_ROWS", 5)
    assert np.array_equal(outline(pixels, mask, palette), whole)
