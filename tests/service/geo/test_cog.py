"""The COG outputs, checked with rio-cogeo's validator, rasterio and Debian's gdalinfo."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio

from service.geo.cog import validate
from service.geo.run import GeoOptions, segment_raster


@pytest.fixture(scope="module")
def outputs(make_raster, engine_for, tmp_path_factory):
    source = make_raster("cog", 1200, 900, gap_every=2)  # the right-hand cell: nodata
    out = tmp_path_factory.mktemp("cog") / "cog"
    result = segment_raster(
        engine_for(), source, out, GeoOptions(probabilities=True, model="default")
    )
    return source, result


def test_mask_and_probabilities_are_valid_cogs(outputs) -> None:
    _, result = outputs
    assert [p.name for p in result.outputs] == ["cog_mask.tif", "cog_prob.tif"]
    for path in result.outputs:
        valid, errors, warnings = validate(path)
        assert valid and not errors and not warnings, (path, errors, warnings)
    leftovers = sorted(p.name for p in result.outputs[0].parent.iterdir())
    # partial and resume files gone; the STAC Item stays (test_stac.py)
    assert leftovers == ["cog.stac.json", "cog_mask.tif", "cog_prob.tif"]


def test_mask_cog_keeps_the_place_and_describes_the_classes(outputs, engine_for) -> None:
    source, result = outputs
    meta = engine_for().metadata
    with rasterio.open(source) as src, rasterio.open(result.outputs[0]) as cog:
        assert cog.crs == src.crs and cog.transform == src.transform
        assert (cog.width, cog.height) == (src.width, src.height)
        assert cog.dtypes == ("uint8",) and cog.nodata == 255
        assert cog.overviews(1) == [2]
        assert cog.tags()["OVERVIEW_RESAMPLING"] == "MODE"
        tags = cog.tags()
        assert json.loads(tags["CLASSES"]) == list(meta.classes)
        assert tags["CLASS_4"] == meta.classes[4]
        assert "0=building" in cog.descriptions[0]
        colours = cog.colormap(1)
        for index, rgb in enumerate(meta.palette):
            assert colours[index][:3] == tuple(rgb)
        mask = cog.read(1)
        valid = src.read_masks(1) > 0
    assert not valid.all()  # the mosaic has a nodata gap
    assert (mask[~valid] == 255).all()
    assert (mask[valid] < meta.num_classes).all()


def test_probabilities_match_the_mask(outputs, engine_for) -> None:
    _, result = outputs
    with rasterio.open(result.outputs[0]) as m, rasterio.open(result.outputs[1]) as p:
        mask, probs = m.read(1), p.read()
        assert p.count == engine_for().metadata.num_classes
        assert p.descriptions[0].startswith("P(building)")
    valid = mask != 255
    assert (probs[:, ~valid] == 0).all()
    sums = probs[:, valid].astype(int).sum(axis=0)
    assert np.abs(sums - 255).max() <= probs.shape[0]  # rounding of each class
    top = probs[:, valid].argmax(axis=0)
    assert (top == mask[valid]).mean() > 0.99  # ties after rounding may differ


def test_gdalinfo_reads_the_crs_and_transform(outputs) -> None:
    if shutil.which("gdalinfo") is None:
        from tests.requirements import require_or_skip

        require_or_skip("gdalinfo (Debian's gdal-bin) is not installed")
    _, result = outputs
    info = subprocess.run(
        ["gdalinfo", str(result.outputs[0])], capture_output=True, text=True, check=True
    ).stdout
    assert "WGS 84 / UTM zone 40N" in info and 'ID["EPSG",32640]' in info
    assert "Origin = (300000.000000000000000,2790000.000000000000000)" in info
    assert "Pixel Size = (0.500000000000000,-0.500000000000000)" in info
    assert "LAYOUT=COG" in info and "Color Table" in info and "NoData Value=255" in info
