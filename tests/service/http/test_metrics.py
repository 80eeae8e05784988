"""``/metrics``: Prometheus text from a per-app registry, counted by route template."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.http.app import create_app
from service.http.settings import Settings
from tests.service.http.conftest import image_bytes


def samples(client: TestClient) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_latency_inference_and_rejections_are_counted(conv_model) -> None:
    settings = Settings(models=[f"conv={conv_model}"], concurrency=3)
    # Two apps in one process: each has its own registry, so neither clashes nor double counts.
    with TestClient(create_app(settings)) as client, TestClient(create_app(settings)) as other:
        for _ in range(2):
            client.post("/v1/segment", files={"image": ("x.png", image_bytes(8, 8))})
        client.post("/v1/segment?model=nope", files={"image": ("x.png", image_bytes(8, 8))})
        client.get("/v1/no/such/path/12345")
        other.get("/healthz")
        seen = samples(client)
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))  # noqa: E731
    route = "/v1/segment"
    assert seen[key("fcn_http_requests_total", route=route, method="POST", status="200")] == 2
    assert seen[key("fcn_http_requests_total", route=route, method="POST", status="404")] == 1
    assert seen[key("fcn_http_requests_total", route="unmatched", method="GET", status="404")] == 1
    assert not any("12345" in str(labels) for _, labels in seen)  # raw paths never labels
    assert seen[key("fcn_rejections_total", reason="unknown_model")] == 1
    assert seen[key("fcn_rejections_total", reason="not_found")] == 1
    assert seen[key("fcn_http_request_duration_seconds_count", route=route)] == 3
    assert seen[key("fcn_inference_duration_seconds_count", model="conv")] == 2
    assert seen[key("fcn_inference_duration_seconds_sum", model="conv")] > 0
    assert seen[key("fcn_inferences_in_flight")] == 0
    assert seen[key("fcn_requests_queued")] == 0
    assert seen[key("fcn_concurrency")] == 3
    assert seen[key("fcn_inference_slots")] == 3  # the old name, kept for one release
    assert not any(name.endswith("healthz") for name, _ in seen)
    assert key("fcn_http_requests_total", route="/healthz", method="GET", status="200") not in seen


def test_web_page_and_docs_assets_are_counted_as_static(conv_model) -> None:
    with TestClient(create_app(Settings(models=[f"conv={conv_model}"]))) as client:
        for path in ("/", "/app.js", "/style.css", "/docs-assets/swagger-ui.css"):
            assert client.get(path).status_code == 200, path
        assert client.get("/no-such-file.js").status_code == 404
        seen = samples(client)
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))  # noqa: E731
    assert seen[key("fcn_http_requests_total", route="static", method="GET", status="200")] == 4
    assert seen[key("fcn_http_requests_total", route="unmatched", method="GET", status="404")] == 1
    assert key("fcn_http_requests_total", route="unmatched", method="GET", status="200") not in seen
