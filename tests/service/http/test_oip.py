"""``/v2`` in process: the binary extension's framing, JSON tensors, limits, admission, errors.

The real client's view is tests/e2e/test_oip_client.py; here each request is built by hand so
the framing can be wrong on purpose.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.http.app import create_app
from service.http.oip import HEADER_LENGTH
from service.http.settings import Settings
from tests.service.http.conftest import image_bytes

KEY = "oip-test-key"


@pytest.fixture(scope="module")
def client(conv_model, grey_model):
    settings = Settings(
        models=[f"conv={conv_model}", f"grey={grey_model}"],
        max_body_bytes=200_000,
        max_pixels=40_000,
        max_side=400,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def frame(request: dict, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: the JSON, then the blobs, and its headers."""
    head = json.dumps(request).encode()
    headers = {HEADER_LENGTH: str(len(head))} if blobs else {}
    return head + b"".join(blobs), headers


def length_prefixed(*elements: bytes) -> bytes:
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


def image_request(data: bytes, **outputs) -> tuple[bytes, dict[str, str]]:
    blob = length_prefixed(data)
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(blob)}
    return frame({"inputs": [tensor], **outputs}, blob)


def split(response) -> tuple[dict, bytes]:
    length = int(response.headers[HEADER_LENGTH])
    return json.loads(response.content[:length]), response.content[length:]


def v1_mask(client, data: bytes, model: str = "conv") -> np.ndarray:
    response = client.post(f"/v1/segment?model={model}", files={"image": ("x.png", data)})
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def assert_oip_error(response, status: int, code: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and body["code"] == code, body
    assert words in body["error"], body


def test_binary_request_and_json_response_by_default(client) -> None:
    data = image_bytes(33, 21, seed=1)
    body, headers = image_request(data)
    response = client.post("/v2/models/conv/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert HEADER_LENGTH not in response.headers
    answer = response.json()
    (out,) = answer["outputs"]
    assert out["name"] == "mask" and out["datatype"] == "UINT8" and out["shape"] == [21, 33]
    mask = np.array(out["data"], dtype=np.uint8).reshape(out["shape"])
    assert np.array_equal(mask, v1_mask(client, data))
    assert answer["model_version"] == response.headers["x-model-version"]
    assert response.headers["x-model"] == "conv"


def test_binary_output_parameter_and_per_output_override(client) -> None:
    data = image_bytes(17, 9, seed=2)
    expected = v1_mask(client, data)
    body, headers = image_request(data, parameters={"binary_data_output": True})
    response = client.post("/v2/models/conv/infer", content=body, headers=headers)
    header, blob = split(response)
    assert response.headers["content-type"] == "application/octet-stream"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 17 * 9}
    assert blob == expected.tobytes()
    # "binary_data" on an output wins over the request-wide parameter
    outputs = [{"name": "mask", "parameters": {"binary_data": False}}]
    body, headers = image_request(data, parameters={"binary_data_output": True}, outputs=outputs)
    answer = client.post("/v2/models/conv/infer", content=body, headers=headers).json()
    assert answer["outputs"][0]["data"] == expected.ravel().tolist()


def test_json_bytes_are_base64_and_json_pixels_nest(client) -> None:
    data = image_bytes(12, 10, seed=3)
    encoded = base64.b64encode(data).decode()
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}
    answer = client.post("/v2/models/conv/infer", json=request).json()
    expected = v1_mask(client, data)
    assert answer["outputs"][0]["data"] == expected.ravel().tolist()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    nested = {"name": "pixels", "shape": list(pixels.shape), "datatype": "UINT8"}
    nested["data"] = pixels.tolist()
    answer = client.post("/v2/models/conv/infer", json={"inputs": [nested], "id": "n1"}).json()
    assert answer["id"] == "n1" and answer["outputs"][0]["data"] == expected.ravel().tolist()


def test_grey_model_takes_hw_pixels(client) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (15, 19), dtype=np.uint8)
    tensor = {"name": "pixels", "shape": [15, 19], "datatype": "UINT8"}
    tensor["parameters"] = {"binary_data_size": pixels.nbytes}
    body, headers = frame({"inputs": [tensor]}, pixels.tobytes())
    response = client.post("/v2/models/grey/infer", content=body, headers=headers)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    assert (
        response.json()["outputs"][0]["data"]
        == v1_mask(client, png.getvalue(), "grey").ravel().tolist()
    )


@pytest.mark.parametrize(
    ("request_body", "words"),
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}, "neither 'data'"),
        (
            {"inputs": [{"name": "pixels", "shape": [2, 2, 3], "datatype": "UINT8", "data": [1]}]},
            "holds 12",
        ),
        (
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 1, 3], "datatype": "UINT4", "data": [1, 2, 3]}
                ]
            },
            "unknown datatype",
        ),
        (
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 1, 3], "datatype": "INT32", "data": [1, 2, 3]}
                ]
            },
            "must be UINT8/UINT16/FP32",
        ),
        (
            {
                "inputs": [
                    {"name": "pixels", "shape": [2, 2], "datatype": "UINT8", "data": [1, 2, 3, 4]}
                ]
            },
            "[H, W, 3]",
        ),
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
            "base64",
        ),
        (
            {
                "inputs": [
                    {"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AA==", "AA=="]}
                ]
            },
            "one encoded image",
        ),
    ],
)
def test_malformed_json_requests_are_400(client, request_body, words) -> None:
    response = client.post("/v2/models/conv/infer", json=request_body)
    assert_oip_error(response, 400, "bad_inference_request", words)


def test_no_image_input_is_422(client) -> None:
    request = {"inputs": [{"name": "other", "shape": [1], "datatype": "UINT8", "data": [1]}]}
    response = client.post("/v2/models/conv/infer", json=request)
    assert_oip_error(response, 422, "missing_image", "send exactly one input")


def test_binary_framing_errors_are_400(client) -> None:
    data = image_bytes(8, 8)
    body, headers = image_request(data)
    post = client.post
    cases = [
        (body + b"extra", headers, "not claimed by any input"),
        (body[:-3], headers, "runs past the end"),
        (body, {HEADER_LENGTH: "abc"}, "must be an integer"),
        (body, {HEADER_LENGTH: str(len(body) + 1)}, "must give the length"),
        (body, {HEADER_LENGTH: "3"}, "invalid inference request"),
    ]
    for content, head, words in cases:
        assert_oip_error(
            post("/v2/models/conv/infer", content=content, headers=head),
            400,
            "bad_inference_request",
            words,
        )
    blob = length_prefixed(data)[:-1] + b""  # an element claiming more bytes than follow
    tensor = {
        "name": "image",
        "shape": [1],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    content, head = frame({"inputs": [tensor]}, blob)
    assert_oip_error(
        post("/v2/models/conv/infer", content=content, headers=head),
        400,
        "bad_inference_request",
        "claims",
    )
    tensor = {
        "name": "pixels",
        "shape": [2, 2, 3],
        "datatype": "UINT8",
        "parameters": {"binary_data_size": 5},
    }
    content, head = frame({"inputs": [tensor]}, bytes(5))
    assert_oip_error(
        post("/v2/models/conv/infer", content=content, headers=head),
        400,
        "bad_inference_request",
        "12 bytes",
    )


def test_limits_and_statuses_match_v1(client) -> None:
    too_many = np.zeros((201, 201, 3), dtype=np.uint8)  # 40,401 pixels > max_pixels 40,000
    tensor = {"name": "pixels", "shape": list(too_many.shape), "datatype": "UINT8"}
    tensor["parameters"] = {"binary_data_size": too_many.nbytes}
    body, headers = frame({"inputs": [tensor]}, too_many.tobytes())
    response = client.post("/v2/models/conv/infer", content=body, headers=headers)
    assert_oip_error(response, 413, "image_too_large")
    body, headers = image_request(bytes(200_001))
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=headers), 413, "body_too_large"
    )
    body, headers = image_request(b"GIF89a" + bytes(10))
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=headers), 400, "corrupt_image"
    )
    body, headers = image_request(b"just text")
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=headers),
        415,
        "unsupported_image",
    )
    body, headers = image_request(image_bytes(8, 8))
    gzip = {**headers, "Content-Encoding": "gzip"}
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=gzip),
        415,
        "unsupported_content_encoding",
    )
    outputs = [{"name": "scores"}]
    body, headers = image_request(image_bytes(150, 150), outputs=outputs)  # 4 x 150 x 150 x 4 bytes
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=headers),
        413,
        "response_too_large",
    )
    body, headers = image_request(image_bytes(8, 8), outputs=[{"name": "logits"}])
    assert_oip_error(
        client.post("/v2/models/conv/infer", content=body, headers=headers),
        400,
        "bad_inference_request",
        "unknown output",
    )


def test_versions_in_the_path(client) -> None:
    version = client.get("/v2/models/conv").json()["versions"][0]
    body, headers = image_request(image_bytes(8, 8))
    ok = client.post(f"/v2/models/conv/versions/{version}/infer", content=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["model_version"] == version
    stale = client.post(
        "/v2/models/conv/versions/000000000000/infer", content=body, headers=headers
    )
    assert_oip_error(stale, 404, "unknown_version", version)
    assert_oip_error(client.get("/v2/models/nope/ready"), 404, "unknown_model", "conv, grey")


def test_unknown_v2_path_has_the_protocols_error_shape(client) -> None:
    assert_oip_error(client.get("/v2/models/conv/explain"), 404, "not_found")
    assert_oip_error(client.get("/v2/models/conv/infer"), 405, "method_not_allowed")


def test_draining_is_503_with_retry_after_and_not_ready(conv_model) -> None:
    with TestClient(create_app(Settings(models=[f"conv={conv_model}"]))) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        client.app.state.service.admission.start_draining()
        body, headers = image_request(image_bytes(8, 8))
        response = client.post("/v2/models/conv/infer", content=body, headers=headers)
        assert_oip_error(response, 503, "draining")
        assert response.headers["retry-after"] == "1"
        ready = client.get("/v2/health/ready")
        assert_oip_error(ready, 503, "draining")
        assert client.get("/v2/health/live").json() == {"live": True}


def test_api_key_guards_models_but_not_health(conv_model) -> None:
    settings = Settings(models=[f"conv={conv_model}"], api_key=KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2").status_code == 200
        assert_oip_error(client.get("/v2/models/conv"), 401, "unauthorized")
        body, headers = image_request(image_bytes(8, 8))
        refused = client.post("/v2/models/conv/infer", content=body, headers=headers)
        assert_oip_error(refused, 401, "unauthorized")
        keyed = {**headers, "Authorization": f"Bearer {KEY}"}
        assert client.post("/v2/models/conv/infer", content=body, headers=keyed).status_code == 200


def test_deeply_nested_json_is_400_not_a_crash(client) -> None:
    deep = "[" * 5000 + "1" + "]" * 5000
    head = '{"inputs": [{"name": "pixels", "shape": [1], "datatype": "UINT8", "data": '
    body = head + deep + "}]}"
    response = client.post("/v2/models/conv/infer", content=body.encode())
    assert_oip_error(response, 400, "bad_inference_request", "recursion limit")
    nested = {"name": "pixels", "shape": [1, 1, 3], "datatype": "UINT8", "data": [[[[1, 2], [3]]]]}
    answer = client.post("/v2/models/conv/infer", json={"inputs": [nested]})
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 1]
