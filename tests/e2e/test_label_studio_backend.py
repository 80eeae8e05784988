"""The Label Studio ML-backend API on a real ``fcn serve`` (uvicorn on 127.0.0.1), with task
images on a loopback host that wants Label Studio's token. Every brush region must decode (our
decoder; Label Studio's own in tests/labeling) to exactly the pixels ``/v1/segment`` gives that
class. The run against the real Label Studio is tests/labeling/test_label_studio_real.py."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import Server, fcn_serve, http
from service.labeling.label_studio import annotation_mask
from tests.e2e.image_host import ImageHost, image_host

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "service" / "http" / "web" / "samples" / "dubai-aerial.jpg"
TOKEN = "ls-token-123"
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="building"/><Label value="Land"/><Label value="road"/>
    <Label value="vegetation"/><Label value="water"/><Label value="tree"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="image">
    <Label value="building"/><Label value="water"/>
  </PolygonLabels>
</View>"""


def _small_jpeg() -> bytes:
    with Image.open(SAMPLE) as image:
        small = image.convert("RGB").crop((0, 0, 200, 150))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def host():
    files = {"1/aerial.jpg": SAMPLE.read_bytes(), "2/small.jpg": _small_jpeg(), "3/x.txt": b"hi"}
    files["aerial.jpg"] = files["1/aerial.jpg"]
    with image_host(files, TOKEN) as started:
        yield started


@pytest.fixture(scope="module")
def server(tmp_path_factory, host: ImageHost) -> Server:
    log = tmp_path_factory.mktemp("ls") / "serve.log"
    port = host.url.rsplit(":", 1)[1]
    env = {
        "PYTHONPATH": str(ROOT),
        "FCN_LABEL_STUDIO_URL": host.url,
        "FCN_LABEL_STUDIO_TOKEN": TOKEN,
        "FCN_LABEL_STUDIO_ALLOWED_HOSTS": f"localhost:{port}",
    }
    with fcn_serve(["--model", "default", "--model", "demo"], log, env=env, cwd=ROOT) as started:
        yield started


def post_json(server: Server, path: str, body: dict, headers: dict | None = None):
    status, _, data = http(
        "POST",
        server.url + path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
        timeout=120,
    )
    return status, json.loads(data)


def v1_mask(server: Server, data: bytes, model: str = "default") -> np.ndarray:
    status, _, body = http(
        "POST", f"{server.url}/v1/segment?model={model}", data, {"Content-Type": "image/jpeg"}
    )
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as png:
        return np.asarray(png)


def classes(server: Server, model: str = "default") -> list[str]:
    return server.get_json(f"/v1/models/{model}")["classes"]


def test_health_setup_and_webhook(server: Server) -> None:
    status, _, body = http("GET", server.url + "/label-studio/health")
    assert status == 200 and json.loads(body)["status"] == "UP"
    status, answer = post_json(server, "/label-studio/setup", {"project": "1.1", "schema": CONFIG})
    assert status == 200, answer
    assert answer["model_version"] == server.get_json("/v1/models/default")["version"]
    brush = next(w for w in answer["label_warnings"] if w.startswith("tag:"))
    assert "unlabeled" in brush and "tree" in brush  # each side's unmatched names
    assert "land" not in brush.lower().replace("unlabeled", "")  # Land matched ignoring case
    polygons = next(w for w in answer["label_warnings"] if w.startswith("poly:"))
    assert "road" in polygons and "tree" not in polygons
    status, answer = post_json(server, "/label-studio/webhook", {"action": "ANNOTATION_CREATED"})
    assert status == 200 and answer == {"status": "ok"}


def test_predict_brush_regions_equal_v1_segment(server: Server, host: ImageHost) -> None:
    tasks = [
        {"id": 11, "data": {"image": "/data/upload/1/aerial.jpg"}},
        {"id": 12, "data": {"image": f"{host.url}/data/upload/2/small.jpg"}},
        {"id": 13, "data": {"image": "/data/local-files/?d=2%2Fsmall.jpg"}},
    ]
    status, answer = post_json(
        server, "/label-studio/predict", {"tasks": tasks, "label_config": CONFIG, "project": "1.1"}
    )
    assert status == 200, answer
    names = classes(server)
    version = server.get_json("/v1/models/default")["version"]
    assert len(answer["results"]) == 3
    names_of = ["1/aerial.jpg", "2/small.jpg", "2/small.jpg"]
    for prediction, file in zip(answer["results"], names_of, strict=True):
        assert prediction["model_version"] == version
        assert 0.0 < prediction["score"] <= 1.0
        data = host.files[file]
        expected = v1_mask(server, data)
        brush = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        labels = [r["value"]["brushlabels"][0] for r in brush]
        present = [names[i] for i in np.unique(expected)]
        wanted = {"land": "Land"}
        assert sorted(labels) == sorted(wanted.get(n, n) for n in present if n != "unlabeled")
        for region in brush:
            assert (region["original_height"], region["original_width"]) == expected.shape
            assert region["from_name"] == "tag" and region["to_name"] == "image"
            assert 0.0 < region["score"] <= 1.0
        index = {wanted.get(n, n): i for i, n in enumerate(names)}
        decoded, unknown = annotation_mask(brush, index, fill=255)
        assert not unknown
        truth = expected.copy()
        truth[expected == names.index("unlabeled")] = 255  # no label in the project
        np.testing.assert_array_equal(decoded, truth)
        polygons = [r for r in prediction["result"] if r["type"] == "polygonlabels"]
        assert {r["value"]["polygonlabels"][0] for r in polygons} <= {"building", "water"}
        for region in polygons:
            assert region["from_name"] == "poly" and region["value"]["closed"] is True
            points = np.array(region["value"]["points"])
            assert points.shape[1] == 2 and points.min() >= 0 and points.max() <= 100
    # the relative paths went to Label Studio's address with its token
    assert ("/data/upload/1/aerial.jpg", f"Token {TOKEN}") in host.requests
    assert ("/data/local-files/?d=2%2Fsmall.jpg", f"Token {TOKEN}") in host.requests


def test_polygons_cover_the_class(server: Server, host: ImageHost) -> None:
    """Rasterised polygons agree with the class's pixels (they are simplified, holes dropped)."""
    tasks = [{"data": {"image": "/data/upload/1/aerial.jpg"}}]
    status, answer = post_json(
        server, "/label-studio/predict", {"tasks": tasks, "label_config": CONFIG}
    )
    assert status == 200
    expected = v1_mask(server, host.files["1/aerial.jpg"])
    names = classes(server)
    polygons = [r for r in answer["results"][0]["result"] if r["type"] == "polygonlabels"]
    for label in ("building", "water"):
        mine = [r for r in polygons if r["value"]["polygonlabels"][0] == label]
        truth = expected == names.index(label)
        if not truth.any():
            assert not mine
            continue
        drawn, _ = annotation_mask(mine, {label: 1}, fill=0)
        inter = np.logical_and(drawn == 1, truth).sum()
        union = np.logical_or(drawn == 1, truth).sum()
        assert inter / union >= 0.9, (label, inter / union)


def test_allowed_host_gets_no_token(server: Server, host: ImageHost) -> None:
    port = host.url.rsplit(":", 1)[1]
    tasks = [{"data": {"image": f"http://localhost:{port}/public/aerial.jpg"}}]
    status, answer = post_json(
        server, "/label-studio/predict", {"tasks": tasks, "label_config": CONFIG}
    )
    assert status == 200, answer
    assert answer["results"][0]["result"]
    assert ("/public/aerial.jpg", None) in host.requests


def test_named_model(server: Server, host: ImageHost) -> None:
    demo = classes(server, "demo")
    config = (
        '<View><Image name="img" value="$photo"/><BrushLabels name="b" toName="img">'
        + "".join(f'<Label value="{n}"/>' for n in demo)
        + "</BrushLabels></View>"
    )
    tasks = [{"data": {"photo": "/data/upload/2/small.jpg"}}]
    status, answer = post_json(
        server, "/label-studio/models/demo/predict", {"tasks": tasks, "label_config": config}
    )
    assert status == 200, answer
    assert answer["model_version"] == server.get_json("/v1/models/demo")["version"]
    expected = v1_mask(server, host.files["2/small.jpg"], "demo")
    brush = answer["results"][0]["result"]
    decoded, _ = annotation_mask(brush, {n: i for i, n in enumerate(demo)}, fill=255)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "text"),
    [
        ("/label-studio/models/nope/predict", {}, 404, "unknown_model", "nope"),
        ("/label-studio/predict", {"label_config": "<View"}, 422, "label_config", "not valid XML"),
        (
            "/label-studio/predict",
            {"label_config": '<View><Image name="i" value="$image"/></View>'},
            422,
            "label_config",
            "no BrushLabels or PolygonLabels",
        ),
        (
            "/label-studio/predict",
            {
                "label_config": '<View><Image name="i" value="$image"/><BrushLabels name="b" '
                'toName="i"><Label value="cat"/></BrushLabels></View>'
            },
            422,
            "label_mismatch",
            "the model has building, land",
        ),
        ("/label-studio/predict", {"tasks": [{"data": {}}]}, 422, "task_data", "data.image"),
        (
            "/label-studio/predict",
            {"tasks": [{"data": {"image": "http://169.254.169.254/latest/meta-data"}}]},
            422,
            "image_url_refused",
            "FCN_LABEL_STUDIO_ALLOWED_HOSTS",
        ),
        (
            "/label-studio/predict",
            {"tasks": [{"data": {"image": "s3://bucket/key.jpg"}}]},
            422,
            "image_url_refused",
            "only http(s)",
        ),
        (
            "/label-studio/predict",
            {"tasks": [{"id": 7, "data": {"image": "/data/upload/9/missing.jpg"}}]},
            422,
            "image_fetch_failed",
            "task 7: reading",
        ),
        (
            "/label-studio/predict",
            {"tasks": [{"data": {"image": "/redirect"}}]},
            422,
            "image_fetch_failed",
            "redirects are not followed",
        ),
        (
            "/label-studio/predict",
            {"tasks": [{"id": 8, "data": {"image": "/data/upload/3/x.txt"}}]},
            415,
            "unsupported_image",
            "task 8: ",
        ),
        ("/label-studio/predict", {"tasks": "x"}, 422, "validation_error", "tasks"),
    ],
)
def test_errors_are_named(server: Server, path, body, status, code, text) -> None:
    full = {"tasks": [{"data": {"image": "/data/upload/1/aerial.jpg"}}], "label_config": CONFIG}
    full.update(body)
    got, answer = post_json(server, path, full)
    assert got == status, answer
    assert answer["error"]["code"] == code
    assert text in answer["error"]["message"]


def test_refused_url_is_never_fetched(server: Server, host: ImageHost) -> None:
    before = len(host.requests)
    tasks = [{"data": {"image": "http://127.0.0.2:1/whatever.jpg"}}]
    status, _ = post_json(server, "/label-studio/predict", {"tasks": tasks, "label_config": CONFIG})
    assert status == 422 and len(host.requests) == before


def test_api_key_as_basic_auth(tmp_path: Path, host: ImageHost) -> None:
    env = {"PYTHONPATH": str(ROOT), "FCN_API_KEY": "sekret", "FCN_LABEL_STUDIO_URL": host.url}
    env["FCN_LABEL_STUDIO_TOKEN"] = TOKEN
    with fcn_serve(["--model", "demo"], tmp_path / "serve.log", env=env, cwd=ROOT) as server:
        body = {"project": "1.1", "schema": CONFIG}
        status, answer = post_json(server, "/label-studio/setup", body)
        assert status == 401 and "Basic auth" in answer["error"]["message"]
        basic = base64.b64encode(b"label-studio:sekret").decode()
        status, _ = post_json(
            server, "/label-studio/setup", body, {"Authorization": f"Basic {basic}"}
        )
        assert status in (200, 422)  # authenticated; demo classes do not match this config
        wrong = base64.b64encode(b"label-studio:nope").decode()
        status, _ = post_json(
            server, "/label-studio/setup", body, {"Authorization": f"Basic {wrong}"}
        )
        assert status == 401
