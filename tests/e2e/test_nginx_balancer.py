"""docker/nginx.conf in front of two real `fcn serve` replicas: spread, and no lost request."""

from __future__ import annotations

import io
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import fcn_serve, http, wait_ready
from tests.e2e.nginx import find_nginx, run_nginx

find_nginx()  # skip the module, with the reason, when nginx is missing

SEGMENT = "/v1/segment?model=rgb"


def _image() -> tuple[bytes, np.ndarray]:
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 2
    mask[:8, :16] = 1
    pixels = np.array([[180, 20, 20], [20, 180, 20], [20, 20, 180]], np.uint8)[mask]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), mask


def _served_segment_requests(server) -> int:
    """Successful POST /v1/segment answers counted by the replica's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = http("GET", server.url + "/metrics")
    total = 0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "fcn_http_requests_total"
                and labels.get("route") == "/v1/segment"
                and labels.get("status") == "200"
            ):
                total += int(sample.value)
    return total


@pytest.fixture
def replicas(rgb_identity_model, tmp_path):
    args = ["--model", f"rgb={rgb_identity_model}", "--max-concurrency", "1"]
    with (
        fcn_serve(args, tmp_path / "a.log") as a,
        fcn_serve(args, tmp_path / "b.log") as b,
    ):
        yield a, b


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    status, _, answer = http("POST", url + SEGMENT, body, {"Content-Type": "image/png"})
    return status, answer


def test_requests_are_spread_over_both_replicas(replicas, tmp_path):
    body, mask = _image()
    with run_nginx([r.url.removeprefix("http://") for r in replicas], tmp_path) as url:
        for _ in range(20):
            status, answer = _post(url, body)
            assert status == 200, answer
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer))), mask)
    counts = [_served_segment_requests(r) for r in replicas]
    assert sum(counts) == 20
    assert min(counts) >= 5, counts


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"]
)
def test_a_replica_stopping_loses_no_request(replicas, tmp_path, stop_signal):
    body, mask = _image()
    a, b = replicas
    results: list[tuple[int, bytes]] = []
    stop_sending = threading.Event()

    def client(url: str) -> None:
        while not stop_sending.is_set():
            results.append(_post(url, body))

    with run_nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")], tmp_path) as url:
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(client, url)
            time.sleep(1.0)
            before = len(results)
            a.process.send_signal(stop_signal)  # replica `a` goes away under load
            a.process.wait(30)
            time.sleep(1.0)
            stop_sending.set()
        # the survivor still answers, and nginx reached it for every request
        wait_ready(b, 5)
    assert before > 0 and len(results) > before
    bad = [(status, answer[:200]) for status, answer in results if status != 200]
    assert bad == [], f"{len(bad)} of {len(results)} requests failed: {bad[:3]}"
    for _, answer in results:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer))), mask)
