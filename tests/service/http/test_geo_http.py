"""GeoTIFFs over a real ``fcn serve`` (uvicorn on 127.0.0.1) with the bundled aerial model:
GeoJSON in WGS 84 or the native CRS, and georeference errors as 4xx JSON."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.requirements import shared_data
from tests.service.geo.rasters import write_geotiff
from tests.service.http.conftest import start_server

REPO = Path(__file__).resolve().parents[3]
ASSET = REPO / "service" / "assets" / "default.onnx"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(
        ["--model", f"aerial={ASSET}", "--no-access-log"], tmp_path_factory.mktemp("geo")
    )
    yield server
    assert server.stop() == 0, server.output()


@pytest.fixture(scope="module")
def dubai_tif(tmp_path_factory) -> bytes:
    from PIL import Image

    photo = np.asarray(Image.open(shared_data("dubai_aerial", "val", "images", "tile2_004.jpg")))
    path = write_geotiff(tmp_path_factory.mktemp("tif") / "dubai.tif", photo)
    return path.read_bytes()


def segment(server, data: bytes, **params) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/segment",
        params=params,
        content=data,
        headers={"Content-Type": "image/tiff"},
        timeout=60,
    )


def test_geojson_is_wgs84_by_default_and_native_on_request(server, dubai_tif) -> None:
    default = segment(server, dubai_tif, format="geojson")
    assert default.status_code == 200, default.text
    body = default.json()
    assert "crs" not in body and body["coordinates"] == "lonlat"
    lon, lat = body["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 54.0 < lon < 56.0 and 25.0 < lat < 25.5
    native = segment(server, dubai_tif, format="geojson", crs="native").json()
    assert native["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32640"
    x, y = native["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 300_000 <= x <= 300_300 and 2_789_700 <= y <= 2_790_000


def test_no_epsg_code_is_a_422_naming_the_option(server, tmp_path) -> None:
    path = write_geotiff(tmp_path / "local.tif", np.zeros((32, 32, 3), np.uint8), None)
    answer = segment(server, path.read_bytes(), format="geojson")
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "georeference"
    assert "no EPSG code" in error["message"] and "crs=native" in error["message"]
    assert "object at 0x" not in error["message"]
    native = segment(server, path.read_bytes(), format="geojson", crs="native")
    assert native.status_code == 200 and "no EPSG code" in native.json()["crs_warning"]


def test_a_bad_crs_choice_is_a_422(server, dubai_tif) -> None:
    answer = segment(server, dubai_tif, format="geojson", crs="utm")
    assert answer.status_code == 422 and "crs" in json.dumps(answer.json())


# --- GeoTIFF out, GIS inputs in -----------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(shared_data("dubai_aerial", "val", "images", "tile2_004.jpg")))


@pytest.fixture(scope="module")
def plain_mask(server, dubai_tif) -> np.ndarray:
    """The mask of the 8-bit RGB GeoTIFF: what every other encoding of the photo should give."""
    return _index(segment(server, dubai_tif))


def _index(answer: httpx.Response) -> np.ndarray:
    import io

    from PIL import Image

    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)))


def test_format_geotiff_is_a_cog_with_the_inputs_place(server, dubai_tif, plain_mask, tmp_path):
    import shutil
    import subprocess

    rasterio = pytest.importorskip("rasterio")
    answer = segment(server, dubai_tif, format="geotiff")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/tiff"
    out = tmp_path / "mask.tif"
    out.write_bytes(answer.content)
    with rasterio.open(out) as mask:
        assert mask.crs.to_epsg() == 32640 and mask.nodata == 255
        assert mask.transform.to_gdal() == (300_000.0, 0.5, 0.0, 2_790_000.0, 0.0, -0.5)
        np.testing.assert_array_equal(mask.read(1), plain_mask)
        assert mask.colormap(1)[0][:3] and mask.tags()["CLASSES"].startswith("[")
        assert mask.overviews(1)
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    valid, errors, _ = cogeo.cog_validate(str(out))
    assert valid, errors
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(out)], capture_output=True, text=True).stdout
        assert 'ID["EPSG",32640]' in info and "LAYOUT=COG" in info
        assert "Origin = (300000.000000000000000,2790000.000000000000000)" in info


def test_format_geotiff_of_a_png_is_a_422_naming_the_problem(server) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    answer = segment(server, buffer.getvalue(), format="geotiff")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "georeference"
    assert "georeferenced" in answer.json()["error"]["message"]


def test_16bit_three_band_tiff_without_photometric_rgb(server, photo, plain_mask, tmp_path):
    wide = photo.astype(np.uint16) * 257  # the same values on the 16-bit scale
    path = write_geotiff(tmp_path / "u16.tif", wide, photometric="MINISBLACK")
    answer = segment(server, path.read_bytes())
    assert "X-Input-Warnings" not in answer.headers
    assert (_index(answer) == plain_mask).mean() >= 0.999


def test_12bit_data_are_rescaled_with_a_warning(server, photo, plain_mask, tmp_path):
    twelve = np.rint(photo.astype(np.float64) * 4095 / 255).astype(np.uint16)
    path = write_geotiff(tmp_path / "u12.tif", twelve)
    answer = segment(server, path.read_bytes())
    assert "12-bit" in answer.headers["X-Input-Warnings"]
    mask = _index(answer)
    assert (mask == plain_mask).mean() >= 0.99  # not 100% water
    report = segment(server, path.read_bytes(), format="json").json()
    assert any("12-bit" in w for w in report["warnings"])


def test_rgb_nir_is_refused_naming_bands_then_selected(server, photo, plain_mask, tmp_path):
    nir = np.concatenate([photo, photo[:, :, :1]], axis=2)
    path = write_geotiff(tmp_path / "rgbn.tif", nir, photometric="RGB")
    refused = segment(server, path.read_bytes())
    assert 400 <= refused.status_code < 500
    message = refused.json()["error"]["message"]
    assert "4 data bands" in message and "bands=1,2,3" in message and "0x" not in message
    np.testing.assert_array_equal(
        _index(segment(server, path.read_bytes(), bands="1,2,3")), plain_mask
    )
    wrong = segment(server, path.read_bytes(), bands="1,2,9")
    assert wrong.status_code == 415 and "band 9" in wrong.json()["error"]["message"]


@pytest.mark.parametrize("how", ["nodata", "alpha"])
def test_nodata_gets_no_class(server, photo, plain_mask, tmp_path, how):
    height, width, _ = photo.shape
    gap = np.zeros((height, width), bool)
    gap[:, : width // 4] = True  # a black quarter, as at a mosaic's edge
    pixels = np.maximum(photo, 1)  # black only in the gap: nodata=0 is every band equal to 0
    pixels[gap] = 0
    if how == "nodata":
        path = write_geotiff(tmp_path / "gap.tif", pixels, nodata=0)
    else:
        alpha = np.where(gap, 0, 255).astype(np.uint8)[:, :, None]
        path = write_geotiff(
            tmp_path / "gap.tif",
            np.concatenate([pixels, alpha], axis=2),
            photometric="RGB",
            alpha="YES",
        )
    mask = _index(segment(server, path.read_bytes()))
    assert (mask[gap] == 255).all()
    assert (mask[~gap] < 6).all()
    inner = np.zeros_like(gap)
    inner[:, width // 4 + 40 :] = True  # away from the gap, the model sees the same context
    assert (mask[inner] == plain_mask[inner]).mean() >= 0.98
    classes = segment(server, path.read_bytes(), format="geojson", crs="native").json()
    assert all(f["properties"]["index"] < 6 for f in classes["features"])


def test_preview_renders_a_16bit_rgb_nir_tiff_as_png(server, photo, tmp_path) -> None:
    import io

    from PIL import Image

    nir = np.concatenate([photo, photo[:, :, :1]], axis=2).astype(np.uint16) * 257
    path = write_geotiff(tmp_path / "rgbn16.tif", nir, photometric="RGB")

    def preview(**params) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/preview",
            params=params,
            content=path.read_bytes(),
            headers={"Content-Type": "image/tiff"},
            timeout=60,
        )

    refused = preview()
    assert refused.status_code == 415 and "bands=1,2,3" in refused.json()["error"]["message"]
    shown = preview(bands="1,2,3")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown.content))), photo)
    assert preview(bands="0,1,2").status_code == 422
