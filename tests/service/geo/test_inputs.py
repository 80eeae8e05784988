"""service.geo.inputs: bands, bit depth and nodata rules, on real GeoTIFFs written by rasterio."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from service.errors import GeoInputError
from service.geo.inputs import open_raster
from service.geo.run import GeoOptions, segment_raster


def write(path, data, **profile):
    """A small georeferenced GeoTIFF of ``data`` ``(bands, h, w)``."""
    base = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": str(data.dtype),
        "crs": "EPSG:32640",
        "transform": Affine(0.5, 0.0, 300_000.0, 0.0, -0.5, 2_790_000.0),
    }
    base.update(profile)
    colorinterp = base.pop("colorinterp", None)
    with rasterio.open(path, "w", **base) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def test_four_bands_without_bands_is_refused_naming_the_option(make_raster) -> None:
    path = make_raster("rgbn", 600, 400, bands=4)
    with pytest.raises(GeoInputError, match="--bands") as info:
        open_raster(path, 3)
    assert "4 data bands" in str(info.value) and "3 channels" in str(info.value)
    with open_raster(path, 3, bands=(3, 2, 1)) as raster:
        pixels, _ = raster.read(0, 0, 50, 60)
        assert raster.indexes == (3, 2, 1) and pixels.shape == (50, 60, 3)
    with rasterio.open(path) as src:  # band order honoured: channel 0 is band 3
        assert np.array_equal(pixels[..., 0], src.read(3, window=((0, 50), (0, 60))))


@pytest.mark.parametrize(
    ("bands", "message"), [((1, 2, 5), "out of range"), ((1, 2), "names 2 bands")]
)
def test_bad_bands_are_refused(make_raster, bands, message) -> None:
    with pytest.raises(GeoInputError, match=message):
        open_raster(make_raster("rgbn", 600, 400, bands=4), 3, bands=bands)


def test_bad_rescale_is_refused(make_raster) -> None:
    with pytest.raises(GeoInputError, match="--rescale"):
        open_raster(make_raster("rgb", 600, 400), 3, rescale=(10.0, 10.0))


def test_alpha_band_is_the_mask_not_a_channel(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (4, 40, 50), dtype=np.uint8)
    data[3] = 255
    data[3, :10] = 0  # transparent rows
    from rasterio.enums import ColorInterp as C

    path = write(tmp_path / "rgba.tif", data, colorinterp=[C.red, C.green, C.blue, C.alpha])
    with open_raster(path, 3) as raster:
        pixels, valid = raster.read(0, 0, 40, 50)
    assert raster.indexes == (1, 2, 3)
    assert not valid[:10].any() and valid[10:].all()
    assert np.array_equal(pixels, data[:3].transpose(1, 2, 0))


def test_nodata_needs_every_band_to_match(tmp_path) -> None:
    data = np.full((3, 4, 4), 100, dtype=np.uint8)
    data[:, 0, 0] = 0  # nodata
    data[0, 1, 1] = 0  # a dark pixel with one zero channel: still a pixel
    path = write(tmp_path / "nodata.tif", data, nodata=0)
    with open_raster(path, 3) as raster:
        _, valid = raster.read(0, 0, 4, 4)
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 15


def test_twelve_bit_fixed_range_reproduces_the_eight_bit_pixels(tmp_path, make_raster) -> None:
    with rasterio.open(make_raster("rgb", 600, 400)) as src:
        eight = src.read()
    path = write(tmp_path / "twelve.tif", eight.astype(np.uint16) * 16, nodata=0)
    with open_raster(path, 3, rescale=(0, 4080)) as raster:
        pixels, _ = raster.read(0, 0, 400, 600)
        assert raster.scaling.rule == "fixed 0..4080"
    assert np.array_equal(pixels, eight.transpose(1, 2, 0))


def test_sixteen_bit_percentile_rule_reads_a_sample_not_the_raster(tmp_path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 3000, (3, 300, 200), dtype=np.uint16)
    data[:, :, :20] = 0  # nodata: left out of the percentiles
    path = write(tmp_path / "sixteen.tif", data, nodata=0)
    with open_raster(path, 3) as raster:
        assert raster.scaling.rule.startswith("percentile")
        for lo, hi in raster.scaling.ranges:
            assert 1000 <= lo < 1100 and 2900 < hi <= 3000
        pixels, valid = raster.read(0, 0, 300, 200)
    assert not valid[:, :20].any() and valid[:, 20:].all()
    assert pixels[valid].min() == 0 and pixels[valid].max() == 255


def test_twelve_bit_dubai_tile_gets_the_expected_classes(tmp_path, dubai, engine_for) -> None:
    """A Dubai photo stored as 12-bit data (x16 plus sensor noise), stretched by the default
    percentile rule, is segmented as well as the 8-bit photo against the real labels."""
    from PIL import Image

    name = "tile2_004"
    photo = np.asarray(Image.open(dubai / "val" / "images" / f"{name}.jpg").convert("RGB"))
    truth = np.asarray(Image.open(dubai / "val" / "masks" / f"{name}.png"))
    rng = np.random.default_rng(2)
    raw = photo.transpose(2, 0, 1).astype(np.uint16) * 16 + rng.integers(0, 16, (3, *truth.shape))
    engine = engine_for()
    scores = {}
    for label, data in (
        ("8bit", photo.transpose(2, 0, 1).copy()),
        ("12bit", raw.astype(np.uint16)),
    ):
        source = write(tmp_path / f"{label}.tif", data)
        result = segment_raster(engine, source, tmp_path / label, GeoOptions())
        with rasterio.open(result.outputs[0]) as out:
            mask = out.read(1)
        labelled = truth != 255
        scores[label] = float((mask[labelled] == truth[labelled]).mean())
    assert scores["12bit"] >= scores["8bit"] - 0.03, scores
    assert scores["12bit"] >= 0.6, scores
