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


# The Dubai photo as a camera or a GIS tool stores it at other bit depths; each GeoTIFF goes
# through HTTP and through fcn predict (its raster path, and its image path with --no-geo).
WIDE = {
    "16-bit (x257, no photometric=RGB)": (lambda p: p.astype(np.uint16) * 257, "MINISBLACK"),
    "12-bit (x16 in uint16)": (lambda p: p.astype(np.uint16) * 16, "RGB"),
    "float32 (/255)": (lambda p: p.astype(np.float32) / 255, "RGB"),
}
# Share of pixels whose class matches the 8-bit photo's mask: the 2-98 percentile stretch
# changes the contrast the model sees, so some pixels on class borders change (about 96.5% on
# this tile when written; the old 1/4095 guess gave 100% water for some 12-bit files).
MIN_AGREEMENT_WITH_8BIT = 0.95


def _cli_masks(
    path: Path, out: Path, served: httpx.Response, *extra: str
) -> tuple[np.ndarray, dict, np.ndarray]:
    """``fcn predict`` on ``path``: the raster path's COG mask and tags, and the image path's
    PNG mask (``--no-geo``). Run as ``served`` was: its backend and precision, one window
    (--tile-size 1024) as the HTTP answer is untiled."""
    from PIL import Image

    from fcn.cli import main

    rasterio = pytest.importorskip("rasterio")
    backend, precision = served.headers["X-Backend"], served.headers["X-Precision"]
    common = ["predict", "default", str(path), "--tile-size", "1024", *extra]
    common += ["--backend", backend, "--precision", precision]
    assert main([*common, "--out", str(out / "geo")]) == 0
    with rasterio.open(out / "geo" / f"{path.stem}_mask.tif") as cog:
        raster_mask, tags = cog.read(1), cog.tags()
    assert main([*common, "--out", str(out / "img"), "--no-geo"]) == 0
    image_mask = np.asarray(Image.open(out / "img" / f"{path.stem}_mask.png"))
    return raster_mask, tags, image_mask


@pytest.mark.parametrize("kind", list(WIDE))
def test_wide_inputs_give_one_mask_on_http_and_fcn_predict(
    server, photo, plain_mask, tmp_path, kind
):
    convert, photometric = WIDE[kind]
    path = write_geotiff(tmp_path / "wide.tif", convert(photo), photometric=photometric)
    answer = segment(server, path.read_bytes())
    mask = _index(answer)
    rule = answer.headers["X-Input-Warnings"]
    assert "2nd-98th percentile" in rule and "model's 0..255" in rule, rule
    report = segment(server, path.read_bytes(), format="json").json()
    assert report["warnings"] == [rule]

    raster_mask, tags, image_mask = _cli_masks(path, tmp_path, answer)
    np.testing.assert_array_equal(raster_mask, mask)
    np.testing.assert_array_equal(image_mask, mask)
    assert tags["RESCALE"] == rule  # the same rule, said the same way, sampled the same way

    agreement = float((mask == plain_mask).mean())
    print(f"{kind}: {agreement:.4f} of pixels as in the 8-bit photo's mask")
    assert agreement >= MIN_AGREEMENT_WITH_8BIT, agreement


def test_fixed_rescale_reproduces_the_8bit_mask_on_every_path(server, photo, plain_mask, tmp_path):
    path = write_geotiff(tmp_path / "twelve.tif", photo.astype(np.uint16) * 16)
    answer = segment(server, path.read_bytes(), rescale="0,4080")  # x 255/4080 = the photo
    np.testing.assert_array_equal(_index(answer), plain_mask)
    assert "rescale=0,4080" in answer.headers["X-Input-Warnings"]
    raster_mask, tags, image_mask = _cli_masks(path, tmp_path, answer, "--rescale", "0,4080")
    np.testing.assert_array_equal(raster_mask, plain_mask)
    np.testing.assert_array_equal(image_mask, plain_mask)
    assert "rescale=0,4080" in tags["RESCALE"]


@pytest.mark.parametrize("value", ["abc", "5,5", "9,1", "1,2,3", "nan,1", "0,inf", ","])
def test_bad_rescale_is_a_422_naming_the_parameter(server, dubai_tif, value) -> None:
    for route in ("/v1/segment", "/v1/preview"):
        answer = httpx.post(
            f"{server.url}{route}",
            params={"rescale": value},
            content=dubai_tif,
            headers={"Content-Type": "image/tiff"},
            timeout=60,
        )
        assert answer.status_code == 422, (route, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "validation_error" and error["message"].startswith("rescale:")
        assert "MIN" in error["message"] or "finite" in error["message"]


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


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_a_tile_that_is_all_nodata_is_all_nodata_not_an_error(server, tmp_path, dtype) -> None:
    """A 16-bit (or float) tile cut from a mosaic's edge has no pixel to take percentiles of:
    its mask is 255 everywhere, said in the warnings; a few valid pixels are segmented."""
    pixels = np.zeros((200, 300, 3), dtype)
    path = write_geotiff(tmp_path / "edge.tif", pixels, nodata=0)
    answer = segment(server, path.read_bytes())
    assert (_index(answer) == 255).all()
    assert "nothing segmented" in answer.headers["X-Input-Warnings"]
    pixels[:50, :50] = 900  # a valid corner
    path = write_geotiff(tmp_path / "corner.tif", pixels, nodata=0)
    mask = _index(segment(server, path.read_bytes()))
    assert (mask[:50, :50] < 6).all() and (mask[50:, :] == 255).all()


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
    # What the model sees: the bit-depth rule applied (x 255/65535 = the photo here).
    shown = preview(bands="1,2,3", rescale="0,65535")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown.content))), photo)
    stretched = preview(bands="1,2,3")  # the default rule: each band's 2-98 percentile
    assert stretched.status_code == 200
    shown_default = np.asarray(Image.open(io.BytesIO(stretched.content)))
    assert shown_default.shape == photo.shape and shown_default.max() == 255
    assert preview(bands="0,1,2").status_code == 422
