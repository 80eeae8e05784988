"""End to end over a real ``fcn serve`` (uvicorn on a loopback port)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from service.engine import Engine
from tests.service.http.conftest import image_bytes, png_size, start_server


@pytest.fixture(scope="module")
def server(conv_model, grey_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    server = start_server(
        [
            "--model",
            f"conv={conv_model}",
            "--model",
            f"grey={grey_model}",
            "--max-body-bytes",
            "200000",
            "--no-access-log",
        ],
        tmp,
    )
    yield server
    assert server.stop() == 0, server.output()


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """A ``width x height`` JPEG whose EXIF says: rotate 90 degrees to display."""
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (height, width, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


CASES = {
    "1x1": (image_bytes(1, 1), (1, 1)),
    "1x4000": (image_bytes(1, 4000), (1, 4000)),
    "4000x1": (image_bytes(4000, 1), (4000, 1)),
    "333x517-jpeg": (image_bytes(333, 517, fmt="JPEG"), (333, 517)),
    "exif-rotated-jpeg": (exif_rotated_jpeg(60, 20), (20, 60)),
    "grey": (image_bytes(31, 17, mode="L"), (31, 17)),
    "rgba": (image_bytes(29, 23, mode="RGBA"), (29, 23)),
    "16-bit": (image_bytes(37, 19, mode="I;16"), (37, 19)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model", ["conv", "grey"])
def test_mask_has_exactly_the_input_size(server, conv_model, grey_model, case, model) -> None:
    data, size = CASES[case]
    response = httpx.post(
        f"{server.url}/v1/segment?model={model}", files={"image": ("in", data)}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert png_size(response.content) == size
    assert response.headers["x-model"] == model
    engine = Engine.load(conv_model if model == "conv" else grey_model)
    expected = engine.predict(engine.decode(data))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), expected)


def test_chunked_upload_over_the_cap_is_413(server) -> None:
    def chunks():
        for _ in range(64):
            yield b"\xff" * 8192  # 512 KiB, no Content-Length

    response = httpx.post(
        f"{server.url}/v1/segment", content=chunks(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_errors_over_the_wire(server) -> None:
    bad = httpx.post(
        f"{server.url}/v1/segment", content=b"GIF", headers={"content-type": "image/gif"}
    )
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_image"
    unknown = httpx.post(f"{server.url}/v1/segment?model=x", files={"image": ("a", b"1")})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"


def test_settings_from_the_environment_reach_the_running_service(
    serve, conv_model, grey_model, tmp_path
) -> None:
    server = serve(
        [],
        env={
            "FCN_MODELS": f"first={conv_model},second={grey_model}",
            "FCN_DEFAULT_MODEL": "second",
            "FCN_API_KEY": "env-key",
            "FCN_MAX_BODY_BYTES": "5000",
            "FCN_ACCESS_LOG": "false",
        },
    )
    headers = {"x-api-key": "env-key"}
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    models = httpx.get(f"{server.url}/v1/models", headers=headers).json()["models"]
    assert [(m["name"], m["default"]) for m in models] == [("first", False), ("second", True)]
    big = httpx.post(
        f"{server.url}/v1/segment",
        content=image_bytes(100, 100),
        headers={**headers, "content-type": "image/png"},
    )
    assert big.status_code == 413
    small = httpx.post(
        f"{server.url}/v1/segment",
        content=image_bytes(8, 8),
        headers={**headers, "content-type": "image/png"},
    )
    assert small.status_code == 200 and small.headers["x-model"] == "second"
    assert "GET /v1/models" not in server.output()  # FCN_ACCESS_LOG=false
