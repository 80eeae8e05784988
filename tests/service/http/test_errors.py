"""Every error path answers its status and a JSON ``{"error": {"code", "message"}}`` body."""

from __future__ import annotations

import struct
import zlib

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.http.settings import Settings
from tests.service.http.conftest import image_bytes

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def client(conv_model):
    settings = Settings(
        models=[f"conv={conv_model}"], max_body_bytes=50_000, max_pixels=10_000, max_side=500
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def keyed(conv_model):
    with TestClient(create_app(Settings(models=[str(conv_model)], api_key=KEY))) as client:
        yield client


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    for word in words:
        assert word in body["error"]["message"]
    return body


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` followed by 8 bytes of non-pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"\0" * 8)


def post(client, data: bytes, content_type: str = "image/png", query: str = ""):
    return client.post(f"/v1/segment{query}", content=data, headers={"content-type": content_type})


def test_unknown_model_is_404_and_never_a_path(client) -> None:
    for name in ("nope", "../conv", "conv.onnx"):
        response = client.post(
            f"/v1/segment?model={name}", files={"image": ("x.png", image_bytes(4, 4))}
        )
        assert_error(response, 404, "unknown_model", "loaded models: conv")


def test_not_an_image_is_415(client) -> None:
    assert_error(post(client, b"hello, world"), 415, "unsupported_image", "not a recognised image")
    assert_error(post(client, b"%PDF-1.7 ..."), 415, "unsupported_image", "PDF")


def test_corrupt_image_is_400(client) -> None:
    truncated = image_bytes(50, 50, fmt="PNG")[:200]
    assert_error(post(client, truncated), 400, "corrupt_image", "corrupt")


def test_non_image_content_type_is_415(client) -> None:
    response = post(client, b'{"image": 1}', content_type="application/json")
    assert_error(response, 415, "unsupported_media_type", "application/json", "multipart")


def test_missing_image_is_422(client) -> None:
    other_field = client.post("/v1/segment", files={"photo": ("x.png", image_bytes(4, 4))})
    assert_error(other_field, 422, "missing_image", "'image'", "photo")
    assert_error(post(client, b""), 422, "missing_image", "empty")
    assert_error(client.post("/v1/segment"), 422, "missing_image")
    as_text = client.post(
        "/v1/segment", data={"image": "not a file"}, files={"other": ("x.png", b"x")}
    )
    assert_error(as_text, 422, "missing_image", "file part")


def test_bad_parameters_are_422(client) -> None:
    data = image_bytes(4, 4)
    assert_error(post(client, data, query="?format=gif"), 422, "validation_error", "format")
    assert_error(post(client, data, query="?alpha=2"), 422, "validation_error", "alpha")


def test_body_over_the_cap_is_413_from_content_length(client) -> None:
    big = image_bytes(120, 120, seed=3)  # ~43 KB of noise: under the cap
    assert len(big) < 50_000
    assert_error(post(client, big + b"\0" * 10_000), 413, "body_too_large", "50000 bytes")


def test_chunked_body_over_the_cap_is_413_while_streaming(client) -> None:
    sent = []

    def chunks():
        for _ in range(100):
            sent.append(1)
            yield b"\0" * 4096

    response = client.post("/v1/segment", content=chunks(), headers={"content-type": "image/png"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large")


def test_chunked_multipart_over_the_cap_is_413(client) -> None:
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(100):
            yield b"\x89" * 4096

    response = client.post(
        "/v1/segment",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413, "body_too_large")


def test_pixels_over_the_limit_are_413_judged_from_the_header(client) -> None:
    # The file holds no pixel data at all: only the header can have said "too large".
    assert_error(post(client, png_claiming(200, 200)), 413, "image_too_large", "40000 pixels")
    assert_error(post(client, png_claiming(600, 1)), 413, "image_too_large", "longest side")
    # The same header within the limits is then a corrupt file, not a size problem.
    assert_error(post(client, png_claiming(50, 50)), 400, "corrupt_image")


def test_a_100000_square_header_is_refused_with_the_services_pixel_limit(keyed) -> None:
    # The service's default limits (FCN_MAX_PIXELS 50 million): Pillow's own bomb check fires
    # first inside Image.open, and its words must not reach the user.
    response = keyed.post(
        "/v1/segment",
        content=png_claiming(100_000, 100_000),
        headers={"Content-Type": "image/png", "X-API-Key": KEY},
    )
    body = assert_error(response, 413, "image_too_large", "10000000000 pixels")
    assert body["error"]["message"].endswith(f"the limit is {Settings().max_pixels}")
    assert "decompression" not in body["error"]["message"]
    assert "178956970" not in body["error"]["message"]


def test_unknown_path_and_wrong_method(client) -> None:
    assert_error(client.get("/v3/segment"), 404, "not_found", "/v3/segment")
    assert_error(client.get("/v1/segment"), 405, "method_not_allowed", "GET")
    assert_error(client.delete("/v1/models"), 405, "method_not_allowed")


def test_api_key(keyed) -> None:
    files = {"image": ("x.png", image_bytes(8, 8))}
    missing = keyed.post("/v1/segment", files=files)
    body = assert_error(missing, 401, "unauthorized", "X-API-Key")
    assert KEY not in body["error"]["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_error(keyed.get("/v1/models", headers={"x-api-key": "wrong"}), 401, "unauthorized")
    assert_error(
        keyed.get("/v1/models", headers={"authorization": "Basic " + KEY}), 401, "unauthorized"
    )
    assert keyed.post("/v1/segment", files=files, headers={"x-api-key": KEY}).status_code == 200
    bearer = {"authorization": f"Bearer {KEY}"}
    assert keyed.get("/v1/models", headers=bearer).status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert keyed.get(open_path).status_code == 200, open_path


def test_a_refusal_never_waits_for_the_thread_pool(conv_model, monkeypatch) -> None:
    # FastAPI runs plain-def dependencies on a thread pool; under load each hand-off waits for
    # the GIL, so a 503 must be decided on the event loop alone (API key and model included).
    def no_threads(*args, **kwargs):
        raise AssertionError("a dependency ran on the thread pool")

    monkeypatch.setattr("fastapi.dependencies.utils.run_in_threadpool", no_threads)
    app = create_app(Settings(models=[f"conv={conv_model}"], api_key=KEY))
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.service.admission.start_draining()
        files = {"image": ("x.png", image_bytes(8, 8))}
        refused = client.post("/v1/segment", files=files, headers={"x-api-key": KEY})
        assert_error(refused, 503, "draining")
        assert refused.headers["retry-after"] == "1"
        assert client.get("/v1/models", headers={"x-api-key": KEY}).status_code == 200
