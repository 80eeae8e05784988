"""deploy/cvat: the nuclio handler against a running ``fcn serve``, called the way CVAT calls
it (``{"image": base64, "threshold"}``), its answer read the way CVAT reads it.

CVAT's server turns each ``mask`` entry's flattened crop into run lengths (starting with a run
of zeros) followed by the box, and its SDK decodes those with ``cvat_sdk.masks.decode_mask``;
the union of a class's decoded regions must equal that class's pixels in ``/v1/segment``'s mask.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from service.engine import read_model_metadata
from service.http.launcher import Server, fcn_serve, http
from service.models import bundled_model_path

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "deploy" / "cvat"
SAMPLE = ROOT / "service" / "http" / "web" / "samples" / "dubai-aerial.jpg"
masks = pytest.importorskip("cvat_sdk.masks", reason="needs cvat-sdk (dev extra)")


def _load_handler():
    spec = importlib.util.spec_from_file_location("cvat_fcnseg_main", FUNCTION / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Response:
    def __init__(self, body, headers, content_type, status_code) -> None:
        self.body, self.headers = body, headers
        self.content_type, self.status_code = content_type, status_code


class Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warn = info


def _context(module, env: dict[str, str], monkeypatch) -> types.SimpleNamespace:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    context = types.SimpleNamespace(
        user_data=types.SimpleNamespace(), logger=Logger(), Response=Response
    )
    module.init_context(context)
    return context


def call(module, context, body) -> tuple[int, object]:
    event = types.SimpleNamespace(body=body)
    response = module.handler(context, event)
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("cvat") / "serve.log"
    with fcn_serve(
        ["--model", "default", "--model", "demo"], log, env={"PYTHONPATH": str(ROOT)}, cwd=ROOT
    ) as started:
        yield started


def cvat_server_points(mask_field: list[int]) -> list[int]:
    """What CVAT's lambda manager stores for a ``mask`` entry: run lengths of the flattened crop
    (0/non-0, first run counts zeros) followed by the box."""
    *crop, xtl, ytl, xbr, ybr = mask_field
    flat = np.asarray(crop) != 0
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0, *runs]
    return [*runs, xtl, ytl, xbr, ybr]


def v1_mask(server: Server, data: bytes, model: str = "default") -> np.ndarray:
    status, _, body = http(
        "POST", f"{server.url}/v1/segment?model={model}", data, {"Content-Type": "image/jpeg"}
    )
    assert status == 200
    with Image.open(io.BytesIO(body)) as png:
        return np.asarray(png)


@pytest.mark.parametrize("model", ["default", "demo"])
def test_regions_decode_to_the_service_mask(server: Server, monkeypatch, model: str) -> None:
    module = _load_handler()
    context = _context(module, {"FCN_URL": server.url, "FCN_MODEL": model}, monkeypatch)
    data = SAMPLE.read_bytes()
    status, regions = call(
        module, context, {"image": base64.b64encode(data).decode(), "threshold": 0.0}
    )
    assert status == 200, regions
    expected = v1_mask(server, data, model)
    height, width = expected.shape
    classes = server.get_json(f"/v1/models/{model}")["classes"]
    union = {name: np.zeros_like(expected, bool) for name in classes}
    for region in regions:
        assert region["type"] == "mask" and region["label"] in classes
        assert 0.0 <= float(region["confidence"]) <= 1.0
        points = region["points"]
        assert len(points) % 2 == 0 and len(points) >= 8  # a polygon of at least 4 corners
        decoded = masks.decode_mask(
            cvat_server_points(region["mask"]), image_width=width, image_height=height
        )
        assert decoded.any()
        assert not (union[region["label"]] & decoded).any()  # regions of a class do not overlap
        union[region["label"]] |= decoded
    for index, name in enumerate(classes):
        np.testing.assert_array_equal(union[name], expected == index, err_msg=name)


def test_threshold_drops_unsure_regions(server: Server, monkeypatch) -> None:
    module = _load_handler()
    context = _context(module, {"FCN_URL": server.url, "FCN_MODEL": ""}, monkeypatch)
    image = base64.b64encode(SAMPLE.read_bytes()).decode()
    _, every = call(module, context, {"image": image, "threshold": 0.0})
    scores = sorted(float(r["confidence"]) for r in every)
    cut = scores[len(scores) // 2]
    _, kept = call(module, context, json.dumps({"image": image, "threshold": cut}).encode())
    assert 0 < len(kept) < len(every)
    assert all(float(r["confidence"]) >= cut for r in kept)


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b"not json", 400, "not JSON"),
        ({"threshold": 0.5}, 400, "base64 image"),
        ({"image": "%%%"}, 400, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a-nope").decode()}, 400, "refused the image"),
        ({"image": base64.b64encode(b"x").decode(), "threshold": "high"}, 400, "must be a number"),
    ],
)
def test_bad_requests_are_named(server: Server, monkeypatch, body, status, text) -> None:
    module = _load_handler()
    context = _context(module, {"FCN_URL": server.url}, monkeypatch)
    got, answer = call(module, context, body)
    assert got == status and text in answer["error"]


def test_service_down_is_named(monkeypatch) -> None:
    module = _load_handler()
    context = _context(module, {"FCN_URL": "http://127.0.0.1:9"}, monkeypatch)
    image = base64.b64encode(SAMPLE.read_bytes()).decode()
    status, answer = call(module, context, {"image": image})
    assert status == 502 and "cannot reach the segmentation service" in answer["error"]


def test_function_yaml_lists_the_default_models_classes() -> None:
    function = yaml.safe_load((FUNCTION / "function.yaml").read_text())
    labels = json.loads(function["metadata"]["annotations"]["spec"])
    classes = list(read_model_metadata(bundled_model_path("default")).classes)
    assert [label["name"] for label in labels] == classes
    assert {label["type"] for label in labels} == {"mask"}
    assert function["metadata"]["annotations"]["type"] == "detector"
    assert function["spec"]["handler"] == "main:handler"
