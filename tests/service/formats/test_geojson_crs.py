"""GeoJSON of a GeoTIFF as GIS tools read it: GDAL/OGR (pyogrio and ``ogrinfo``) reads the file
back, and its coordinates are compared with the expected ones.

The GeoTIFF is a real Dubai photograph written by rasterio (GDAL) at 0.5 m/pixel in UTM 40N
(EPSG:32640). By default (RFC 7946) the coordinates are WGS 84 longitude/latitude and there is
no ``crs`` member; ``crs="native"`` keeps UTM metres with the named CRS that GDAL reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from service import pipeline
from service.engine import Engine
from service.errors import GeoDependencyError, GeoInputError
from service.formats.shapes import geojson
from service.geo.crs import require
from tests.requirements import shared_data
from tests.service.geo.rasters import ORIGIN, PIXEL, write_geotiff

rasterio = pytest.importorskip("rasterio", reason="rasterio (the geo extra)")
pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (the geo extra)")
pyproj = pytest.importorskip("pyproj", reason="pyproj (the geo extra)")
shapely = pytest.importorskip("shapely", reason="shapely (the dev extra)")
from shapely import from_wkb  # noqa: E402
from shapely.geometry import shape  # noqa: E402

ASSET = Path(__file__).resolve().parents[3] / "service" / "assets" / "default.onnx"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(ASSET)


@pytest.fixture(scope="module")
def placed(engine, tmp_path_factory) -> tuple[Path, pipeline.Segmentation]:
    photo = engine.decode(shared_data("dubai_aerial", "val", "images", "tile2_004.jpg"))
    path = write_geotiff(tmp_path_factory.mktemp("geo") / "dubai.tif", photo, "EPSG:32640")
    return path, pipeline.segment(engine, path, ("geojson",))


def _read_back(path: Path) -> tuple[str | None, list]:
    """CRS and geometries as GDAL/OGR reads them."""
    info = pyogrio.read_info(path)
    _, _, geometry, _ = pyogrio.raw.read(path)
    return info["crs"], [from_wkb(g) for g in geometry]


def test_default_geojson_is_wgs84_lonlat_as_gdal_reads_it(engine, placed, tmp_path) -> None:
    path, segmentation = placed
    body = pipeline.encode(engine, segmentation, "geojson")
    collection = json.loads(body)
    assert "crs" not in collection and collection["coordinates"] == "lonlat"
    native = json.loads(pipeline.encode(engine, segmentation, "geojson", crs="native"))
    out = tmp_path / "wgs84.geojson"
    out.write_bytes(body)
    crs, geometries = _read_back(out)
    assert crs == "EPSG:4326"
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    assert len(geometries) == len(native["features"]) > 0
    for read, feature in zip(geometries, native["features"], strict=True):
        expected = np.array(feature["geometry"]["coordinates"][0][0])  # first outer ring, UTM
        lon, lat = to_lonlat.transform(expected[:, 0], expected[:, 1])
        got = np.array(read.geoms[0].exterior.coords)
        np.testing.assert_allclose(got, np.stack([lon, lat], axis=1), atol=1e-9)
        assert 54.0 < got[:, 0].min() and got[:, 0].max() < 56.0  # Dubai: ~55 E, ~25 N
        assert 25.0 < got[:, 1].min() and got[:, 1].max() < 25.5
        assert read.is_valid


def test_native_geojson_keeps_utm_and_gdal_reads_its_crs(engine, placed, tmp_path) -> None:
    path, segmentation = placed
    body = json.loads(pipeline.encode(engine, segmentation, "geojson", crs="native", tolerance=0))
    out = tmp_path / "native.geojson"
    out.write_text(json.dumps(body))
    crs, geometries = _read_back(out)
    assert crs == "EPSG:32640"
    height, width = segmentation.mask.shape
    in_pixels = geojson(segmentation.mask, engine.metadata.classes, 0.0)["features"]
    for read, feature, plain in zip(geometries, body["features"], in_pixels, strict=True):
        assert read.equals(shape(feature["geometry"]))
        assert read.area == pytest.approx(shape(plain["geometry"]).area * PIXEL * PIXEL)
        x0, y0, x1, y1 = read.bounds
        assert ORIGIN[0] <= x0 < x1 <= ORIGIN[0] + PIXEL * width
        assert ORIGIN[1] - PIXEL * height <= y0 < y1 <= ORIGIN[1]
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not installed")
    listing = subprocess.run(
        ["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "UTM zone 40N" in listing and 'ID["EPSG",32640]' in listing


def test_wgs84_geojson_in_ogrinfo(engine, placed, tmp_path) -> None:
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not installed")
    out = tmp_path / "wgs84.geojson"
    out.write_bytes(pipeline.encode(engine, placed[1], "geojson"))
    listing = subprocess.run(
        ["ogrinfo", "-so", "-al", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "WGS 84" in listing and "Extent: (55." in listing


def test_a_geotiff_without_epsg_code_says_so(engine, tmp_path) -> None:
    photo = np.zeros((16, 24, 3), np.uint8)
    path = write_geotiff(tmp_path / "local.tif", photo, None)
    segmentation = pipeline.segment(engine, path, ("geojson",))
    with pytest.raises(GeoInputError, match="no EPSG code.*crs=native") as caught:
        pipeline.encode(engine, segmentation, "geojson")
    assert not isinstance(caught.value, GeoDependencyError)
    native = json.loads(pipeline.encode(engine, segmentation, "geojson", crs="native"))
    assert "crs" not in native and "no EPSG code" in native["crs_warning"]
    assert native["coordinates"] == "map"


def test_bad_crs_choice_and_missing_extra() -> None:
    with pytest.raises(ValueError, match="wgs84, native"):
        geojson(np.zeros((2, 2), np.uint8), ["a"], crs="utm")
    with pytest.raises(GeoDependencyError, match=r"pip install 'fcnseg\[geo\]'"):
        require("fcnseg_no_such_geo_module")
