"""``fcn predict`` on GeoTIFFs: auto-detected, COGs out, km^2/hour reported; images unchanged."""

from __future__ import annotations

import shutil

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
