"""Model reload without downtime, against a real ``fcn serve``: under load, by HTTP and SIGHUP.

Versions are copies of the bundled default model that differ only in a metadata entry (so in
their content hash): what is measured is the swap, not a model's speed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import Server, fcn_serve, http
from service.http.served_models import VERSION_DIGITS
from service.models import bundled_model_path, file_sha256
from tests.service.http.conftest import make_slow_model

ROOT = Path(__file__).resolve().parents[2]
KEY = "reload-e2e-key"
AUTH = {"X-API-Key": KEY}
MIN_REQUESTS = 200


def variant(path: Path, revision: int, source: Path | None = None) -> str:
    """Write ``source`` (the bundled model) with an extra metadata entry; return its version."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(source or bundled_model_path()))
    entry = model.metadata_props.add()
    entry.key, entry.value = "revision", str(revision)
    staging = path.with_suffix(".staging")  # not *.onnx: the server never sees half a file
    onnx.save(model, str(staging))
    os.replace(staging, path)
    return file_sha256(path)[:VERSION_DIGITS]


def png(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def start(tmp_path: Path, folder: Path, *extra: str):
    args = ["--models-dir", str(folder), "--max-queue", "32", *extra]
    env = {"PYTHONPATH": str(ROOT), "FCN_API_KEY": KEY}
    return fcn_serve(args, tmp_path / "serve.log", env=env, cwd=ROOT)


def reload(server: Server) -> dict:
    status, _, body = http("POST", f"{server.url}/v1/models/reload", b"", AUTH, timeout=120)
    assert status == 200, body
    return {m["name"]: m for m in json.loads(body)["models"]}


def listed_version(server: Server, name: str) -> str:
    status, _, body = http("GET", f"{server.url}/v1/models", headers=AUTH)
    assert status == 200, body
    return {m["name"]: m["version"] for m in json.loads(body)["models"]}[name]


@dataclass
class Answer:
    sent: float
    status: int
    version: str


def client_loop(server: Server, stop: threading.Event, answers: list[Answer]) -> None:
    image = png(64, 48)
    while not stop.is_set():
        sent = time.monotonic()
        try:
            status, headers, _ = http(
                "POST",
                f"{server.url}/v1/segment?model=m",
                image,
                {"Content-Type": "image/png", **AUTH},
            )
        except OSError as exc:  # a refused or reset connection is a failed request too
            status, headers = -1, {"error": str(exc)}
        answers.append(Answer(sent, status, headers.get("x-model-version", "")))


def readiness_loop(server: Server, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        for path in ("/readyz", "/v2/health/ready"):
            try:
                seen.append(http("GET", server.url + path, timeout=10)[0])
            except OSError:
                seen.append(-1)
        time.sleep(0.01)


def wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_two_reloads_under_a_request_loop_fail_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    old = variant(folder / "m.onnx", 1)
    with start(tmp_path, folder) as server:
        answers: list[Answer] = []
        ready: list[int] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=client_loop, args=(server, stop, answers)),
            threading.Thread(target=client_loop, args=(server, stop, answers)),
            threading.Thread(target=readiness_loop, args=(server, stop, ready)),
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(answers) >= 50)
            middle = variant(folder / "m.onnx", 2)  # replaced under load, then reloaded by HTTP
            report = reload(server)
            first_done = time.monotonic()
            assert report["m"]["status"] == "reloaded" and report["m"]["version"] == middle
            wait_for(lambda: len(answers) >= 120)
            new = variant(folder / "m.onnx", 3)  # ... and by SIGHUP
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: listed_version(server, "m") == new)
            second_done = time.monotonic()
            count = len(answers)
            wait_for(lambda: len(answers) >= max(MIN_REQUESTS, count + 40))
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    failed = [a for a in answers if a.status != 200]
    versions = {a.version for a in answers}
    after_first = {a.version for a in answers if a.sent > first_done}
    after_second = {a.version for a in answers if a.sent > second_done}
    print(
        f"\nreload under load: {len(answers)} requests, {len(failed)} failed, "
        f"{len(ready)} readiness probes ({sum(s != 200 for s in ready)} not 200), "
        f"versions {sorted(versions)}, after the last reload {sorted(after_second)}"
    )
    assert len(answers) >= MIN_REQUESTS
    assert failed == []
    assert ready and set(ready) == {200}
    assert versions == {old, middle, new}  # each answer names the old or a new version
    assert after_first <= {middle, new}
    assert after_second == {new}  # after the reload only the new one
    assert "SIGHUP: reloading the models" in server.output()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for RSS")
def test_memory_after_twenty_reloads_is_within_ten_percent_of_after_one(tmp_path: Path) -> None:
    # The fp32 `demo` model. The INT8 (QDQ) `default` model measured 1.155x here: RSS steps up
    # over the first three reloads, then stays flat (about 260 MB +-5 over reloads 3..20);
    # an open gap, recorded in docs/protocols.md.
    source = bundled_model_path("demo")
    folder = tmp_path / "models"
    folder.mkdir()
    variant(folder / "m.onnx", 0, source)
    image = png(96, 80, seed=1)
    headers = {"Content-Type": "image/png", **AUTH}
    with start(tmp_path, folder) as server:
        rss: list[int] = []
        for i in range(1, 21):
            version = variant(folder / "m.onnx", i, source)
            assert reload(server)["m"]["version"] == version
            for _ in range(3):  # use each version, so its session has run
                status, answer, _ = http("POST", f"{server.url}/v1/segment?model=m", image, headers)
                assert status == 200 and answer["x-model-version"] == version
            rss.append(rss_kib(server.process.pid))
    print(f"\nRSS (KiB) after reloads 1..20: {rss}; 20 vs 1: {rss[-1] / rss[0]:.3f}x")
    assert rss[-1] <= 1.10 * rss[0], rss


def test_in_flight_requests_finish_on_the_version_they_started_with(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    slow = make_slow_model(tmp_path / "slow.onnx", depth=16, width=24)
    old = variant(folder / "m.onnx", 1, slow)
    image = png(512, 384, seed=2)
    headers = {"Content-Type": "image/png", **AUTH}
    with start(tmp_path, folder) as server:
        reference = http("POST", f"{server.url}/v1/segment?model=m", image, headers, timeout=120)
        result: list = []
        worker = threading.Thread(
            target=lambda: result.append(
                http("POST", f"{server.url}/v1/segment?model=m", image, headers, timeout=120)
            )
        )
        worker.start()
        wait_for(
            lambda: (
                "fcn_inferences_in_flight 1.0" in http("GET", server.url + "/metrics")[2].decode()
            )
        )
        staging = make_slow_model(folder / "m.staging", depth=2)  # other weights, other masks
        os.replace(staging, folder / "m.onnx")
        new = reload(server)["m"]["version"]
        swapped_while_running = worker.is_alive()
        worker.join(120)
        after = http("POST", f"{server.url}/v1/segment?model=m", image, headers, timeout=120)
    status, answer, body = result[0]
    assert swapped_while_running, "the request ended before the swap: make it slower"
    assert status == 200 and answer["x-model-version"] == old != new
    assert body == reference[2]  # the old engine's mask ...
    assert after[1]["x-model-version"] == new and after[2] != body  # ... not the new one's
