"""Every output format over a real ``fcn serve`` with the bundled model on a real photograph,
and ``fcn predict --format`` writing the same bytes under the table's suffixes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fcn.cli import main
from service.formats.registry import ENCODERS
from tests.requirements import shared_data
from tests.service.http.conftest import start_server

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the dev extra)")

REPO = Path(__file__).resolve().parents[3]
ASSET = REPO / "service" / "assets" / "default.onnx"


@pytest.fixture(scope="module")
def photo() -> bytes:
    return shared_data("dubai_aerial", "val", "images", "tile2_004.jpg").read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(
        ["--model", f"aerial={ASSET}", "--no-access-log"], tmp_path_factory.mktemp("formats")
    )
    yield server
    assert server.stop() == 0, server.output()


def segment(server, data: bytes, **params) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/segment",
        params=params,
        content=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )


def test_the_model_lists_every_format(server) -> None:
    answer = httpx.get(f"{server.url}/v1/models/aerial").json()
    assert answer["name"] == "aerial"
    assert [f["name"] for f in answer["formats"]] == list(ENCODERS)
    for listed in answer["formats"]:
        encoder = ENCODERS[listed["name"]]
        assert (listed["media_type"], listed["suffix"]) == (encoder.media_type, encoder.suffix)
    assert httpx.get(f"{server.url}/v1/models").json()["models"][0]["formats"] == answer["formats"]
    missing = httpx.get(f"{server.url}/v1/models/nope")
    assert missing.status_code == 404 and "aerial" in missing.json()["error"]["message"]
    spec = httpx.get(f"{server.url}/openapi.json").json()
    parameters = spec["paths"]["/v1/segment"]["post"]["parameters"]
    (fmt,) = [p for p in parameters if p["name"] == "format"]
    assert fmt["schema"]["$ref"].endswith("/OutputFormat")
    assert spec["components"]["schemas"]["OutputFormat"]["enum"] == list(ENCODERS)
    content = spec["paths"]["/v1/segment"]["post"]["responses"]["200"]["content"]
    assert set(content) == {e.media_type for e in ENCODERS.values()}
    assert len(content["application/json"]["schema"]["anyOf"]) == 3  # json, coco-rle, polygons


def test_every_format_answers_with_its_media_type_and_names_the_model(server, photo) -> None:
    mask = np.asarray(Image.open(io.BytesIO(segment(server, photo).content)))
    for name, encoder in ENCODERS.items():
        answer = segment(server, photo, format=name)
        if (
            encoder.requires_georef
        ):  # a JPEG has no place on the map: tests/service/http/test_geo_http
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "georeference"
            continue
        assert answer.status_code == 200, (name, answer.text[:300])
        assert answer.headers["content-type"].startswith(encoder.media_type)
        assert answer.headers["x-model"] == "aerial"
        if encoder.media_type == "image/png":
            with Image.open(io.BytesIO(answer.content)) as image:
                assert image.size == mask.shape[::-1]
            continue
        body = answer.json()
        assert body["model"] == "aerial" and (body["height"], body["width"]) == mask.shape
        if name == "coco-rle":
            for annotation in body["annotations"]:
                rle = dict(annotation["segmentation"])
                rle["counts"] = rle["counts"].encode()
                decoded = mask_api.decode(rle)
                np.testing.assert_array_equal(decoded, mask == annotation["category_id"])


def test_tolerance_is_a_checked_parameter(server, photo) -> None:
    exact = segment(server, photo, format="polygons", tolerance=0).json()
    simple = segment(server, photo, format="polygons").json()
    assert exact["tolerance"] == 0 and simple["tolerance"] == 0.5

    def points(body: dict) -> int:
        return sum(len(r) for c in body["classes"] for p in c["polygons"] for r in p)

    assert points(simple) < points(exact)
    for bad in ("-1", "1e9", "nan", "wide"):
        answer = segment(server, photo, format="polygons", tolerance=bad)
        assert answer.status_code == 422, (bad, answer.text)


def test_fcn_predict_writes_each_format_under_its_suffix(server, photo, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "tile.jpg").write_bytes(photo)
    out = tmp_path / "out"
    argv = ["predict", f"aerial={ASSET}", str(folder), "--out", str(out)]
    plain = {name: e for name, e in ENCODERS.items() if not e.requires_georef}  # a JPEG input
    assert main([*argv, "--format", ",".join(plain), "--tolerance", "0.5"]) == 0
    for name, encoder in plain.items():
        written = (out / f"tile{encoder.suffix}").read_bytes()
        served = segment(server, photo, format=name).content
        if encoder.media_type == "image/png":
            assert written == served, name  # the same pipeline, the same bytes
        else:
            body = json.loads(written)
            assert body["model"] == "aerial" and body["source"].endswith("tile.jpg")
            keep = {"model", "model_version", "timings_ms", "source", "arch"}
            served_body = {k: v for k, v in json.loads(served).items() if k not in keep}
            assert {k: v for k, v in body.items() if k not in keep} == served_body, name
