"""The app in process (TestClient): answers, headers, models, the static page and OpenAPI."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.engine import Engine
from service.http.app import create_app
from service.http.settings import Settings
from tests.service.http.conftest import image_bytes


@pytest.fixture
def settings(conv_model, identity_model) -> Settings:
    return Settings(models=[f"conv={conv_model}", f"ident={identity_model}"])


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings)) as client:
        yield client


def test_default_answer_is_an_index_png_of_the_input_size_with_the_engines_mask(
    client, conv_model
) -> None:
    data = image_bytes(517, 333, fmt="JPEG")
    response = client.post("/v1/segment", files={"image": ("a.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == "conv"
    assert float(response.headers["x-inference-ms"]) > 0
    assert response.headers["x-image-size"] == "517x333"
    with Image.open(io.BytesIO(response.content)) as mask:
        assert mask.mode == "L" and mask.size == (517, 333)
        served = np.asarray(mask)
    engine = Engine.load(conv_model)
    expected = engine.predict(engine.decode(data))
    np.testing.assert_array_equal(served, expected)
    assert len(np.unique(served)) > 1  # a real mask, not a constant


def test_raw_image_body_gives_the_same_mask_as_multipart(client) -> None:
    data = image_bytes(64, 48)
    raw = client.post("/v1/segment", content=data, headers={"content-type": "image/png"})
    form = client.post("/v1/segment", files={"image": ("x.png", data, "image/png")})
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content


def test_output_formats(client) -> None:
    data = image_bytes(40, 30)
    color = client.post("/v1/segment?format=color", files={"image": ("x.png", data)})
    overlay = client.post("/v1/segment?format=overlay&alpha=0.3", files={"image": ("x.png", data)})
    summary = client.post("/v1/segment?format=json", files={"image": ("x.png", data)})
    with Image.open(io.BytesIO(color.content)) as image:
        assert (image.mode, image.size) == ("P", (40, 30))
    with Image.open(io.BytesIO(overlay.content)) as image:
        assert (image.mode, image.size) == ("RGB", (40, 30))
    assert summary.headers["content-type"] == "application/json"
    report = summary.json()
    assert report["model"] == "conv" and (report["width"], report["height"]) == (40, 30)
    assert sum(c["pixels"] for c in report["classes"]) == 1200
    assert sum(c["fraction"] for c in report["classes"]) == pytest.approx(1.0)
    assert report["timings_ms"]["inference"] > 0


def test_model_parameter_picks_a_loaded_model(client) -> None:
    data = image_bytes(16, 8)
    response = client.post("/v1/segment?model=ident", files={"image": ("x.png", data)})
    assert response.status_code == 200
    assert response.headers["x-model"] == "ident"
    assert (response.headers["x-backend"], response.headers["x-precision"]) == ("ort", "fp32")
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(response.content))), pixels.argmax(2)
    )


def test_models_endpoint_describes_each_model(client, conv_model) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["conv", "ident"]
    conv = models[0]
    assert conv["default"] is True and models[1]["default"] is False
    assert conv["classes"] == ["class0", "class1", "class2", "class3"]
    assert len(conv["palette"]) == 4 and conv["in_channels"] == 3 and conv["size_multiple"] == 1
    assert conv["sha256"] == hashlib.sha256(conv_model.read_bytes()).hexdigest()
    assert conv["provider"] == "CPUExecutionProvider"
    # The test models record no precision checks, so auto serves ONNX Runtime at fp32.
    assert (conv["backend"], conv["precision"]) == ("ort", "fp32")
    assert conv["arch"] == "test"


def test_default_model_setting(conv_model, identity_model) -> None:
    settings = Settings(
        models=[f"conv={conv_model}", f"ident={identity_model}"], default_model="ident"
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/segment", files={"image": ("x.png", image_bytes(8, 8))})
        assert response.headers["x-model"] == "ident"
    assert (response.headers["x-backend"], response.headers["x-precision"]) == ("ort", "fp32")


def test_health_and_readiness(settings) -> None:
    app = create_app(settings)
    client = TestClient(app)  # no `with`: the lifespan has not loaded the models
    assert client.get("/healthz").json() == {"status": "ok"}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["error"]["code"] == "not_ready"
    with TestClient(app) as started:
        ready = started.get("/readyz")
        assert ready.status_code == 200 and ready.json()["models"] == ["conv", "ident"]
        app.state.service.admission.start_draining()
        draining = started.get("/readyz")
        assert draining.status_code == 503 and draining.json()["error"]["code"] == "draining"
        refused = started.post("/v1/segment", files={"image": ("x.png", image_bytes(8, 8))})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "draining"
        assert started.get("/healthz").status_code == 200


def test_replica_header_names_the_host_only_when_asked(settings) -> None:
    with TestClient(create_app(settings)) as plain:
        assert "x-replica" not in plain.get("/healthz").headers
    named = settings.model_copy(update={"replica_header": True})
    with TestClient(create_app(named)) as client:
        answers = [
            client.get("/healthz"),
            client.post("/v1/segment", files={"image": ("x.png", image_bytes(8, 8))}),
            client.post("/v1/segment", content=b"not an image"),  # an error answer too
        ]
    assert [r.status_code for r in answers] == [200, 200, 415]
    assert {r.headers["x-replica"] for r in answers} == {socket.gethostname()}


def test_static_page_is_served_at_root(conv_model, tmp_path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>fcnseg</title>")
    settings = Settings(models=[str(conv_model)], web_dir=tmp_path, api_key="k")
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<title>fcnseg</title>" in page.text
        missing = client.get("/nothing-here.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_openapi_documents_both_ways_to_send_an_image(client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "image/*"}
    params = {p["name"] for p in spec["paths"]["/v1/segment"]["post"]["parameters"]}
    assert params == {"format", "model", "alpha", "tolerance", "crs", "bands", "rescale"}
    responses = spec["paths"]["/v1/segment"]["post"]["responses"]
    for status in ("400", "401", "404", "413", "415", "422", "503"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    json.dumps(spec)  # serialisable


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_pages_load_every_asset_from_the_service_itself(client, page) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "http://" not in html.text and "https://" not in html.text  # no CDN, no web fonts
    urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, f"{page} references no script: {urls}"
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url  # the real bundle, not an error page
    spec_url = re.search(r"""(?:url|spec-url)\W+['"]?(/openapi\.json)""", html.text)
    assert spec_url, f"{page} does not load /openapi.json"
    assert client.get(spec_url.group(1)).json()["info"]["title"] == "fcnseg"
