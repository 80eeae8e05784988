"""``fcn predict`` on GeoTIFFs: auto-detected, COGs out, km^2/hour reported; images unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
import rasterio

from fcn.cli import main


def test_folder_with_a_geotiff_and_a_photo(make_raster, dubai, tmp_path, capsys) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(make_raster("cli", 900, 700), inputs / "ortho.tif")
    shutil.copy(dubai / "val" / "images" / "tile1_004.jpg", inputs / "photo.jpg")
    out = tmp_path / "out"
    code = main(["predict", "default", str(inputs), "--out", str(out), "--probabilities"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "ortho.stac.json",
        "ortho_mask.tif",
        "ortho_prob.tif",
        "photo_mask.png",
    ]
    assert "km^2/hour" in captured.err and "900 x 700 px" in captured.err
    assert "2 ok, 0 failed, 0 skipped" in captured.out
    with rasterio.open(out / "ortho_mask.tif") as cog:
        assert cog.crs.to_epsg() == 32640

    again = main(["predict", "default", str(inputs), "--out", str(out), "--resume"])
    assert again == 0
    assert "skipped" in capsys.readouterr().err


def test_extra_bands_fail_naming_the_option(make_raster, tmp_path, capsys) -> None:
    source = make_raster("cli4", 600, 500, bands=4)
    code = main(["predict", "default", str(source), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "FAILED" in err and "--bands" in err
    code = main(
        ["predict", "default", str(source), "--out", str(tmp_path / "o2"), "--bands", "1,2,3"]
    )
    assert code == 0
    assert (tmp_path / "o2" / "cli4_mask.tif").exists()


def test_no_geo_keeps_the_image_path(make_raster, tmp_path, capsys) -> None:
    source = make_raster("plain", 600, 500)
    code = main(["predict", "default", str(source), "--out", str(tmp_path), "--no-geo"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "plain_mask.png").exists()
    assert not (tmp_path / "plain_mask.tif").exists()


def test_asking_for_image_formats_keeps_the_image_path(make_raster, tmp_path, capsys) -> None:
    source = make_raster("plain", 600, 500)
    code = main(["predict", "default", str(source), "--out", str(tmp_path), "-f", "geojson"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.geojson"]
    code = main(
        ["predict", "default", str(source), "--out", str(tmp_path), "-f", "geojson", "--geo"]
    )
    assert code == 0
    assert (tmp_path / "plain_mask.tif").exists()


def test_vectors_from_the_raster_path_open_in_ogrinfo_with_the_rasters_crs(
    make_raster, tmp_path, capsys
) -> None:
    import shutil as sh
    import subprocess

    import numpy as np
    import pyogrio
    import shapely

    from tests.requirements import require_or_skip

    source = make_raster("cli", 900, 700)
    out = tmp_path / "out"
    code = main(["predict", "default", str(source), "--out", str(out), "--vectors", "gpkg"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    gpkg = out / "cli_mask.gpkg"
    assert "polygons (native) -> " in captured.err and str(gpkg) in captured.err
    with rasterio.open(out / "cli_mask.tif") as cog:
        mask, pixel_area = cog.read(1), abs(cog.transform.a * cog.transform.e)
    _, _, geometry, field_data = pyogrio.raw.read(gpkg)[:4]
    meta = pyogrio.read_info(gpkg)
    assert meta["crs"] == "EPSG:32640"
    index = field_data[list(meta["fields"]).index("class_index")]
    areas = shapely.area(shapely.from_wkb(geometry))
    assert shapely.is_valid(shapely.from_wkb(geometry)).all()
    for value in np.unique(mask[mask != 255]):
        expected = float((mask == value).sum()) * pixel_area
        assert abs(areas[index == value].sum() - expected) <= 0.005 * expected, value
    assert not (index == 255).any()  # nodata gets no polygon
    if sh.which("ogrinfo") is None:
        require_or_skip("ogrinfo (Debian gdal-bin) is not installed")
    listing = subprocess.run(
        ["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True, text=True, check=True
    ).stdout
    assert 'ID["EPSG",32640]' in listing and f"Feature Count: {len(geometry)}" in listing
    item = json.loads((out / "cli.stac.json").read_text())  # the STAC Item lists the vectors
    assert item["assets"]["vectors"]["href"] == "cli_mask.gpkg"
    assert item["assets"]["vectors"]["type"] == "application/geopackage+sqlite3"

    again = main(["predict", "default", str(source), "--out", str(out), "--vectors", "gpkg"])
    assert again == 0 and "polygons" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["predict", "default", str(source), "--out", str(out), "--vector-tolerance", "-1"])
    assert refused.value.code == 2 and "must be >= 0" in capsys.readouterr().err


def test_image_geojson_takes_the_crs_choice_http_takes(dubai, tmp_path, capsys) -> None:
    """``fcn predict --format geojson`` of a georeferenced image: WGS 84 by default (RFC 7946),
    the image's own CRS with ``--crs native``; read back with GDAL/OGR (pyogrio)."""
    import numpy as np
    from PIL import Image
    from pyproj import Transformer

    from tests.service.geo.rasters import ORIGIN, PIXEL, write_geotiff

    pyogrio = pytest.importorskip("pyogrio")
    shapely = pytest.importorskip("shapely")
    photo = np.asarray(Image.open(dubai / "val" / "images" / "tile2_004.jpg").convert("RGB"))
    source = write_geotiff(tmp_path / "ortho.tif", photo)
    files = {}
    for choice in (None, "wgs84", "native"):
        out = tmp_path / str(choice)
        flags = ["--crs", choice] if choice else []
        args = ["predict", "default", str(source), "--out", str(out), "--format", "geojson"]
        assert main([*args, *flags]) == 0, capsys.readouterr().err
        (files[choice],) = out.glob("*.geojson")
    assert files[None].read_bytes() == files["wgs84"].read_bytes()

    def read(path):
        _, _, wkb, fields = pyogrio.raw.read(path)
        coords = [shapely.get_coordinates(shapely.from_wkb(g)) for g in wkb]
        return pyogrio.read_info(path)["crs"], coords, list(fields[0])

    wgs_crs, lonlat, wgs_classes = read(files["wgs84"])
    native_crs, xy, native_classes = read(files["native"])
    assert wgs_crs == "EPSG:4326" and native_crs == "EPSG:32640"
    assert wgs_classes == native_classes and len(xy) >= 2
    height, width = photo.shape[:2]
    every = np.concatenate(xy)
    assert every[:, 0].min() >= ORIGIN[0] and every[:, 0].max() <= ORIGIN[0] + width * PIXEL
    assert every[:, 1].max() <= ORIGIN[1] and every[:, 1].min() >= ORIGIN[1] - height * PIXEL
    to_wgs84 = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    for native_ring, wgs_ring in zip(xy, lonlat, strict=True):
        lon, lat = to_wgs84.transform(native_ring[:, 0], native_ring[:, 1])
        np.testing.assert_allclose(wgs_ring, np.stack([lon, lat], axis=1), atol=1e-8, rtol=0)
    with pytest.raises(SystemExit):
        main(["predict", "default", str(source), "--out", str(tmp_path), "--crs", "utm"])
    assert "--crs" in capsys.readouterr().err
