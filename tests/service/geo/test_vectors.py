"""Vectors from class rasters polygonized in blocks and merged across the seams, read back with
real GDAL (pyogrio, ``ogrinfo``): valid polygons, the raster's class areas, no seam slivers.

Rasters: real Dubai label masks placed at 0.5 m/pixel in UTM 40N with a nodata gap, and a
synthetic mosaic of 3-pixel cells (diagonal touches and holes cut by every seam).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import GeoInputError
from service.geo.vectors import check_driver, write_vectors
from tests.requirements import shared_data
from tests.service.geo.rasters import ORIGIN, PIXEL, write_geotiff

pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (the geo extra)")
pyproj = pytest.importorskip("pyproj", reason="pyproj (the geo extra)")
shapely = pytest.importorskip("shapely", reason="shapely (the dev extra)")

CLASSES = ("building", "land", "road", "vegetation", "water", "unlabeled")
AREA_BOUND = 0.005  # per class, polygon area vs pixel count x pixel area


def _mask_tif(path: Path, mask: np.ndarray, crs: str | None = "EPSG:32640") -> Path:
    return write_geotiff(path, mask[:, :, None], crs, photometric=None, nodata=255)


@pytest.fixture(scope="module", params=("tile1_008", "tile3_008"))
def dubai_mask(request, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A Dubai label mask with a nodata gap (a band of 255 across it, as in a mosaic)."""
    mask = np.asarray(
        Image.open(shared_data("dubai_aerial", "val", "masks", f"{request.param}.png"))
    )
    mask = mask.copy()
    mask[:, : mask.shape[1] // 5] = 255
    return _mask_tif(tmp_path_factory.mktemp("mask") / "mask.tif", mask), mask


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    mask = np.kron(rng.integers(0, 4, (70, 90)), np.ones((3, 3), int)).astype(np.uint8)
    mask[100:140, 50:120] = 255
    return _mask_tif(tmp_path_factory.mktemp("mosaic") / "mosaic.tif", mask), mask


def _read(path: Path):
    info = pyogrio.read_info(path)
    _, _, wkb, fields = pyogrio.raw.read(path)
    return info, shapely.from_wkb(wkb), fields


def _check_areas_and_validity(path: Path, mask: np.ndarray) -> dict[int, int]:
    info, geometries, (index, _, area) = _read(path)
    assert shapely.is_valid(geometries).all()
    counts = np.bincount(mask[mask != 255].ravel(), minlength=len(CLASSES))
    for value in np.flatnonzero(counts):
        chosen = index == value
        raster_area = counts[value] * PIXEL * PIXEL
        assert abs(shapely.area(geometries[chosen]).sum() - raster_area) <= AREA_BOUND * raster_area
        assert area[chosen].sum() == pytest.approx(raster_area, rel=AREA_BOUND)
    assert set(np.unique(index)) == set(np.flatnonzero(counts))
    return {int(v): int((index == v).sum()) for v in np.flatnonzero(counts)}


@pytest.mark.parametrize("block", [64, 100])
def test_blocks_merge_to_the_unblocked_polygons(dubai_mask, block, tmp_path) -> None:
    path, mask = dubai_mask
    whole = write_vectors(path, tmp_path / "whole.gpkg", classes=CLASSES, crs="native")
    assert whole.blocks == 1 and whole.seam_pieces == 0
    split = write_vectors(
        path, tmp_path / "split.gpkg", classes=CLASSES, crs="native", block_size=block
    )
    assert split.blocks > 20 and split.seam_pieces > 0
    per_class = _check_areas_and_validity(split.path, mask)
    assert per_class == _check_areas_and_validity(whole.path, mask)  # no slivers, no splits
    assert split.features == whole.features == sum(per_class.values())
    _, whole_geometries, _ = _read(whole.path)
    _, split_geometries, _ = _read(split.path)
    union_a = shapely.union_all(whole_geometries)
    union_b = shapely.union_all(split_geometries)
    assert union_a.symmetric_difference(union_b).area == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("block", [16, 17, 50])
def test_seams_through_diagonals_and_holes(mosaic, block, tmp_path) -> None:
    path, mask = mosaic
    whole = write_vectors(
        path,
        tmp_path / "whole.fgb",
        classes=CLASSES,
        driver="FlatGeobuf",
        crs="native",
        block_size=4096,
    )
    split = write_vectors(
        path,
        tmp_path / "split.fgb",
        classes=CLASSES,
        driver="flatgeobuf",
        crs="native",
        block_size=block,
    )
    assert split.seam_pieces > 0
    assert _check_areas_and_validity(split.path, mask) == _check_areas_and_validity(
        whole.path, mask
    )


def test_wgs84_default_and_what_gdal_reads(dubai_mask, tmp_path) -> None:
    path, mask = dubai_mask
    native = write_vectors(
        path, tmp_path / "native.gpkg", classes=CLASSES, crs="native", block_size=128
    )
    lonlat = write_vectors(path, tmp_path / "lonlat.gpkg", classes=CLASSES, block_size=128)
    info_native, geometries_native, fields_native = _read(native.path)
    info_lonlat, geometries_lonlat, fields_lonlat = _read(lonlat.path)
    assert info_native["crs"] == "EPSG:32640" and info_lonlat["crs"] == "EPSG:4326"
    assert info_native["fields"].tolist() == ["class_index", "class_name", "area"]
    np.testing.assert_array_equal(fields_native[2], fields_lonlat[2])  # area in m^2 in both
    to_lonlat = pyproj.Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    for utm, lonlat_geometry in zip(geometries_native[:50], geometries_lonlat[:50], strict=True):
        x, y = np.array(utm.exterior.coords).T
        expected = np.stack(to_lonlat.transform(x, y), axis=1)
        np.testing.assert_allclose(np.array(lonlat_geometry.exterior.coords), expected, atol=1e-9)
    x0, y0, x1, y1 = shapely.total_bounds(geometries_native)
    height, width = mask.shape
    assert ORIGIN[0] + PIXEL * (width // 5) == pytest.approx(x0)  # the nodata gap is left out
    assert x1 <= ORIGIN[0] + PIXEL * width and ORIGIN[1] - PIXEL * height <= y0 < y1 <= ORIGIN[1]
    if shutil.which("ogrinfo") is None:
        pytest.skip("ogrinfo (Debian gdal-bin) is not installed")
    for summary, expected_crs in ((native, 'ID["EPSG",32640]'), (lonlat, 'ID["EPSG",4326]')):
        listing = subprocess.run(
            ["ogrinfo", "-so", "-al", str(summary.path)], capture_output=True, text=True, check=True
        ).stdout
        assert expected_crs in listing and f"Feature Count: {summary.features}" in listing


def test_geojson_native_names_the_crs_and_wgs84_follows_rfc7946(dubai_mask, tmp_path) -> None:
    path, _ = dubai_mask
    native = write_vectors(
        path, tmp_path / "n.geojson", classes=CLASSES, driver="GeoJSON", crs="native"
    )
    text = native.path.read_text()
    assert '"urn:ogc:def:crs:EPSG::32640"' in text
    assert pyogrio.read_info(native.path)["crs"] == "EPSG:32640"
    lonlat = write_vectors(path, tmp_path / "w.geojson", classes=CLASSES, driver="GeoJSON")
    assert '"crs"' not in lonlat.path.read_text()
    assert pyogrio.read_info(lonlat.path)["crs"] == "EPSG:4326"


def test_tolerance_in_metres_simplifies_and_stays_valid(dubai_mask, tmp_path) -> None:
    path, mask = dubai_mask
    exact = write_vectors(path, tmp_path / "e.gpkg", classes=CLASSES, crs="native")
    simple = write_vectors(
        path, tmp_path / "s.gpkg", classes=CLASSES, crs="native", tolerance_m=1.0, block_size=100
    )
    _, exact_geometries, _ = _read(exact.path)
    _, simple_geometries, _ = _read(simple.path)
    assert shapely.is_valid(simple_geometries).all()
    assert (
        shapely.get_num_coordinates(simple_geometries).sum()
        < 0.7 * shapely.get_num_coordinates(exact_geometries).sum()
    )
    for value, area in exact.area.items():
        assert simple.area[value] == pytest.approx(area, rel=0.05)


def test_bad_requests_name_the_problem(mosaic, tmp_path) -> None:
    path, _ = mosaic
    with pytest.raises(ValueError, match="GPKG, FlatGeobuf, GeoJSON"):
        check_driver("shapefile")
    with pytest.raises(ValueError, match="wgs84, native"):
        write_vectors(path, tmp_path / "x.gpkg", classes=CLASSES, crs="utm")
    with pytest.raises(ValueError, match="tolerance_m"):
        write_vectors(path, tmp_path / "x.gpkg", classes=CLASSES, tolerance_m=-1)
    rgb = write_geotiff(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(GeoInputError, match="1 band"):
        write_vectors(rgb, tmp_path / "x.gpkg", classes=CLASSES)
    rasterio = pytest.importorskip("rasterio")
    bare = tmp_path / "bare.tif"
    with rasterio.open(bare, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as out:
        out.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(GeoInputError, match="no CRS.*native"):
        write_vectors(bare, tmp_path / "x.gpkg", classes=CLASSES)
    assert write_vectors(bare, tmp_path / "x.gpkg", classes=CLASSES, crs="native").features == 1
