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
