"""Real uvicorn under load: bursts get 503 at once while /healthz answers; SIGTERM drains."""

from __future__ import annotations

import signal
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.http.conftest import make_slow_model, png_size

# A flat image compresses to a few KB: uploads are instant and only inference takes time.
SIDE = 768


def flat_png(side: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def post_image(url: str, data: bytes, results: list, index: int, timeout: float = 60) -> None:
    start = time.monotonic()
    try:
        response = httpx.post(
            f"{url}/v1/segment",
            content=data,
            headers={"content-type": "image/png"},
            timeout=timeout,
        )
        results[index] = (response, time.monotonic() - start)
    except httpx.TransportError as exc:
        results[index] = (exc, time.monotonic() - start)


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_burst_beyond_slots_and_queue_gets_503_at_once_and_healthz_stays_fast(
    serve, slow_model
) -> None:
    server = serve(
        [
            "--model",
            f"slow={slow_model}",
            "--max-concurrency",
            "1",
            "--max-queue",
            "1",
            "--intra-op-threads",
            "1",
            "--retry-after-s",
            "2",
            "--no-access-log",
        ]
    )
    data, burst = flat_png(SIDE), 8
    results: list = [None] * burst
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                start = time.monotonic()
                assert client.get("/healthz").status_code == 200
                health.append(time.monotonic() - start)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    threads = [
        threading.Thread(target=post_image, args=(server.url, data, results, i))
        for i in range(burst)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    prober.join(10)

    ok = [(r, t) for r, t in results if r.status_code == 200]
    busy = [(r, t) for r, t in results if r.status_code == 503]
    assert len(ok) + len(busy) == burst, [r for r, _ in results]
    assert len(ok) >= 2  # the slot and the queue place were served
    assert len(busy) >= burst - 4
    slowest_busy = max(t for _, t in busy)
    assert slowest_busy < min(t for _, t in ok)  # refused at once, not after waiting
    for response, _ in busy:
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "queue_full"
    for response, _ in ok:
        assert png_size(response.content) == (SIDE, SIDE)
    assert len(health) >= 5 and max(health) < 0.25, health
    assert metric(server.url, "fcn_rejections_total", reason="queue_full") == len(busy)
    assert metric(server.url, "fcn_http_requests_total", route="/v1/segment", status="503") == len(
        busy
    )
    assert metric(server.url, "fcn_inference_duration_seconds_count", model="slow") == len(ok)


def test_sigterm_finishes_requests_in_flight_refuses_new_work_and_exits(serve, slow_model) -> None:
    server = serve(
        [
            "--model",
            f"slow={slow_model}",
            "--max-concurrency",
            "1",
            "--max-queue",
            "3",
            "--intra-op-threads",
            "1",
            "--shutdown-grace-s",
            "30",
            "--no-access-log",
        ]
    )
    data = flat_png(SIDE)
    results: list = [None] * 4
    threads = [
        threading.Thread(target=post_image, args=(server.url, data, results, i)) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_for(
        lambda: (
            metric(server.url, "fcn_inferences_in_flight") == 1
            and metric(server.url, "fcn_requests_queued") == 2
        ),
        what="one request running and two queued",
    )
    # A fourth request is still uploading when the signal comes: it was accepted, so it finishes.
    drained = threading.Event()

    def slow_upload():
        yield data[:100]
        assert drained.wait(20)
        yield data[100:]

    upload = threading.Thread(target=post_image, args=(server.url, slow_upload(), results, 3))
    threads.append(upload)
    upload.start()
    wait_for(lambda: metric(server.url, "fcn_requests_accepted") == 4, what="4 accepted")
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_for(lambda: metric(server.url, "fcn_draining") == 1, what="draining")

    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
    refused = httpx.post(
        f"{server.url}/v1/segment", content=data, headers={"content-type": "image/png"}
    )
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert refused.json()["error"]["code"] == "draining"
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    drained.set()

    for thread in threads:
        thread.join(60)
    for response, _ in results:
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200 and png_size(response.content) == (SIDE, SIDE)
    assert server.process.wait(20) == 0, server.output()
    assert time.monotonic() - signalled < 20
    assert "drained" in server.output()


def test_sigterm_exits_within_the_grace_period_even_if_work_is_stuck(
    serve, model_dir, tmp_path
) -> None:
    # Far slower than the grace period: the process must not wait for it.
    very_slow = make_slow_model(model_dir / "very_slow.onnx", depth=64)
    server = serve(
        [
            "--model",
            f"slow={very_slow}",
            "--max-concurrency",
            "1",
            "--intra-op-threads",
            "1",
            "--shutdown-grace-s",
            "0.5",
            "--tile-threshold",
            "4000000",
            "--no-access-log",
        ]
    )
    results: list = [None]
    thread = threading.Thread(target=post_image, args=(server.url, flat_png(1200), results, 0))
    thread.start()
    wait_for(lambda: metric(server.url, "fcn_inferences_in_flight") == 1, what="in flight")
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = server.process.wait(10)
    elapsed = time.monotonic() - signalled
    thread.join(10)
    assert code == 1, server.output()
    assert elapsed < 0.5 + 2.0, elapsed
    assert "grace period over" in server.output()
    response, _ = results[0]
    assert not isinstance(response, httpx.Response) or response.status_code != 200


def test_ctrl_c_on_an_idle_server_exits_at_once(serve, conv_model) -> None:
    server = serve(["--model", str(conv_model), "--no-access-log"])
    server.process.send_signal(signal.SIGINT)
    start = time.monotonic()
    assert server.process.wait(10) == 0
    assert time.monotonic() - start < 3
