"""The Open Inference Protocol with the real client: ``tritonclient[http]`` against ``fcn serve``.

The client runs with its defaults (inputs and outputs as binary data) unless a test says
otherwise; every mask must equal the one ``/v1/segment`` returns for the same image, byte for
byte. The server tiles images above 40,000 pixels here, so one image goes through tiling.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine import Engine, EngineConfig, read_model_metadata
from service.http.launcher import Server, fcn_serve, http
from service.models import bundled_model_path

httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TILE_THRESHOLD = 40_000


def encoded(width: int, height: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    """A smooth image with shapes (so the model finds several classes) and some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 1 - x * y / (width * height)], axis=-1) * 200
    base[(x - width / 2) ** 2 + (y - height / 3) ** 2 < (min(width, height) / 4) ** 2] = (
        220,
        40,
        60,
    )
    pixels = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory, conv_4class_model) -> Server:
    log = tmp_path_factory.mktemp("oip") / "serve.log"
    args = ["--model", "default", "--model", f"conv={conv_4class_model}"]
    args += ["--tile-threshold", str(TILE_THRESHOLD), "--max-body-bytes", "2000000"]
    env = {"PYTHONPATH": str(ROOT)}
    with fcn_serve(args, log, env=env, cwd=ROOT) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: Server):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def v1_mask(server: Server, data: bytes, model: str) -> tuple[bytes, tuple[int, int], str]:
    status, headers, body = http(
        "POST", f"{server.url}/v1/segment?model={model}", data, {"Content-Type": "image/png"}
    )
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as png:
        mask = np.asarray(png)
    return mask.tobytes(), mask.shape, headers["x-model-version"]


def image_input(data: bytes, binary: bool = True):
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
    return tensor


def test_health_and_server_metadata(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "fcnseg" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client, server: Server) -> None:
    listed = {m["name"]: m for m in server.get_json("/v1/models")["models"]}
    meta = client.get_model_metadata("default")
    assert meta["name"] == "default"
    assert meta["versions"] == [listed["default"]["version"]]
    assert listed["default"]["sha256"].startswith(meta["versions"][0])
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {
        "image": "BYTES",
        "pixels": "UINT8",
    }
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert outputs["mask"] == {"name": "mask", "datatype": "UINT8", "shape": [-1, -1]}
    assert outputs["scores"]["shape"] == [len(listed["default"]["classes"]), -1, -1]
    assert meta["parameters"]["classes"] == listed["default"]["classes"]
    assert client.is_model_ready("conv") and client.is_model_ready("default")
    assert client.is_model_ready("default", meta["versions"][0])
    assert not client.is_model_ready("default", "0" * 12)
    assert not client.is_model_ready("nope")
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "404" and "loaded models" in unknown.value.message()


@pytest.mark.parametrize(
    ("model", "width", "height", "fmt", "mode"),
    [
        ("default", 97, 61, "PNG", "RGB"),
        ("default", 257, 201, "JPEG", "RGB"),  # over the tile threshold: tiled
        ("default", 1, 1, "PNG", "RGB"),
        ("conv", 123, 45, "PNG", "L"),  # grey in, the model's 3 channels out of the decoder
    ],
)
def test_encoded_image_with_client_defaults_equals_v1(
    client, server: Server, model: str, width: int, height: int, fmt: str, mode: str
) -> None:
    data = encoded(width, height, fmt, mode, seed=width)
    result = client.infer(model, [image_input(data)])
    mask = result.as_numpy("mask")
    expected, shape, version = v1_mask(server, data, model)
    assert mask.dtype == np.uint8 and mask.shape == shape == (height, width)
    assert mask.tobytes() == expected
    response = result.get_response()
    assert response["model_name"] == model and response["model_version"] == version
    assert response["outputs"][0]["parameters"]["binary_data_size"] == width * height
    if width * height > 1_000:
        assert len(np.unique(mask)) > 1  # a real mask, not one class everywhere


def test_pixel_tensors_uint8_binary_and_json_equal_v1(client, server: Server) -> None:
    data = encoded(131, 77, seed=3)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    expected, _, _ = v1_mask(server, data, "default")
    for binary in (True, False):
        tensor = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput("mask", binary_data=binary)]
        result = client.infer("default", [tensor], outputs=wanted, request_id=f"px-{binary}")
        assert result.as_numpy("mask").tobytes() == expected
        response = result.get_response()
        assert response["id"] == f"px-{binary}"
        assert ("data" in response["outputs"][0]) is not binary


def test_fp32_pixels_are_taken_in_zero_to_one(client, server: Server) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(encoded(64, 48, seed=4))).convert("RGB"))
    floats = pixels.astype(np.float32) / 255.0
    tensor = httpclient.InferInput("pixels", list(floats.shape), "FP32")
    tensor.set_data_from_numpy(floats)
    mask = client.infer("default", [tensor]).as_numpy("mask")
    # The same path the server runs: `auto` measures its candidates at each start, and ONNX
    # Runtime's and OpenVINO's INT8 kernels may differ on a few boundary pixels.
    served = server.get_json("/v1/models/default")
    config = EngineConfig(
        providers=("CPUExecutionProvider",),
        backend=served["backend"],
        precision=served["precision"],
    )
    engine = Engine.load(bundled_model_path(), config)
    assert np.array_equal(mask, engine.predict(floats))


def test_scores_on_request(client) -> None:
    data = encoded(70, 50, seed=5)
    outputs = [httpclient.InferRequestedOutput("mask"), httpclient.InferRequestedOutput("scores")]
    result = client.infer("default", [image_input(data)], outputs=outputs)
    mask, scores = result.as_numpy("mask"), result.as_numpy("scores")
    classes = read_model_metadata(bundled_model_path()).num_classes
    assert scores.dtype == np.float32 and scores.shape == (classes, 50, 70)
    np.testing.assert_allclose(scores.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(scores.argmax(axis=0), mask)


def test_errors_reach_the_client_with_the_v1_statuses(client) -> None:
    cases = [
        ("nope", image_input(encoded(8, 8)), "404", "no model named 'nope'"),
        ("default", image_input(b"hello, world"), "415", "not a recognised image"),
        ("default", image_input(encoded(40, 40)[:60]), "400", ""),
        ("default", image_input(bytes(2_100_000)), "413", "larger than the limit"),
    ]
    for model, tensor, status, words in cases:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(model, [tensor])
        assert refused.value.status() == status, refused.value
        assert words in refused.value.message()


def test_error_body_has_the_protocols_shape(server: Server) -> None:
    request = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]})
    status, headers, body = http("POST", f"{server.url}/v2/models/default/infer", request.encode())
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(body)
    assert set(error) == {"error", "code"} and isinstance(error["error"], str)
    assert "neither 'data' nor parameters.binary_data_size" in error["error"]
