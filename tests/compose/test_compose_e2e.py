"""docker-compose.yml end to end: images built, containers started, requests through the
published ports and nginx (``make compose-test``; deselected from the default run).

The tests share one stack and run in file order: one replica first, then the train profile,
the drain on ``compose stop``, and last three replicas behind nginx.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.compose.conftest import LB_PORT, ROOT
from tests.service.conftest import make_onnx_model

httpx = pytest.importorskip("httpx", reason="httpx (the dev extra) is the HTTP client")

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]


def png(width: int, height: int, seed: int = 0) -> bytes:
    """Blocks of random colour: varied enough to segment, small enough to send fast."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    pixels = blocks.repeat(8, axis=0).repeat(8, axis=1)[:height, :width]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def segment(url: str, image: bytes, model: str | None = None, timeout: float = 120):
    params = {"model": model} if model else {}
    return httpx.post(
        f"{url}/v1/segment", files={"image": ("x.png", image)}, params=params, timeout=timeout
    )


def mask_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text[:500]
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_api_is_healthy_non_root_and_read_only(stack) -> None:
    (api,) = stack.containers("api")
    assert api["State"]["Health"]["Status"] == "healthy"
    assert stack.start_to_ready_s < 30, f"up --wait took {stack.start_to_ready_s:.1f} s"
    assert api["HostConfig"]["ReadonlyRootfs"] is True
    assert "/tmp" in api["HostConfig"]["Tmpfs"]
    name = api["Name"].lstrip("/")
    assert api["Config"]["User"] == "fcn"
    assert stack.docker("exec", name, "id", "-u").strip() == "10001"
    # nothing outside /tmp is writable: not the venv, not the models mount, not the workdir
    for path in ("/opt/fcn/x", "/models/x", "/x"):
        assert not stack.succeeds(name, "touch", path), path
    assert stack.succeeds(name, "touch", "/tmp/x")
    # the serve image has no compilers and no torch
    assert not stack.succeeds(name, "sh", "-c", "command -v gcc || command -v cc")
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    assert stack.docker("exec", name, "python", "-c", probe).strip() == "True"


def test_post_through_the_published_port_gives_a_mask_of_the_input_size(stack) -> None:
    url = stack.api_url()
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    response = segment(url, png(301, 157))
    mask = mask_of(response)
    assert mask.shape == (157, 301)
    (api,) = stack.containers("api")
    assert response.headers["x-replica"] == api["Config"]["Hostname"]


def _copy_into_models_volume(stack, source: Path, name: str) -> None:
    """Drop ``source`` into the models volume as ``name`` (a one-off container mounts it)."""
    volume = f"{stack.project}_models"
    stack.docker(
        "run", "--rm", "--user", "0", "--entrypoint", "sh",
        "-v", f"{volume}:/models", "-v", f"{source.parent}:/in:ro",
        "fcnseg-serve:latest", "-c", f"cp /in/{source.name} /models/{name} && chmod 644 /models/{name}",
    )  # fmt: skip


def test_a_model_dropped_into_the_volume_is_served_after_a_restart(stack, tmp_path) -> None:
    tmp_path.chmod(0o755)
    model = make_onnx_model(tmp_path / "rgb.onnx", kind="identity", num_classes=3)
    _copy_into_models_volume(stack, model, "rgb.onnx")
    stack.compose("restart", "api")
    stack.wait_healthy("api", 1)
    url = stack.api_url()
    assert "rgb" in httpx.get(f"{url}/v1/models", timeout=10).text
    # the identity model's mask is the brightest channel: red 0, green 1, blue 2
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :20, 0] = pixels[:, 20:40, 1] = pixels[:, 40:, 2] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = segment(url, buffer.getvalue(), model="rgb")
    assert response.headers["x-model"] == "rgb"
    expected = np.repeat(np.array([0] * 20 + [1] * 20 + [2] * 20)[None, :], 40, axis=0)
    np.testing.assert_array_equal(mask_of(response), expected)


def test_train_profile_trains_on_a_mounted_dataset_and_the_api_serves_it(stack, tmp_path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "fcn", "data", "demo", "--out", str(data), "--count", "8",
         "--size", "64", "--seed", "3"],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
    )  # fmt: skip
    for path in [tmp_path, *tmp_path.rglob("*")]:  # readable by the image's uid 10001
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {
        "TRAIN_DATA": str(data),
        "TRAIN_MODEL_NAME": "tiny",
        "TRAIN_CPUS": "2",
        "TRAIN_ARGS": "--arch unet --encoder resnet18 --epochs 1 --epoch-size 8 --crop-size 64 --batch-size 4 "
        "--no-plots --workers 0",
    }
    start = time.monotonic()
    # One thread: on a busy machine, OpenMP threads under the container's CPU quota spend their
    # time waiting for each other (seen: 10 convolutions 1.2 s on one thread, 7.5 s on two).
    run = ["--profile", "train", "run", "--rm", "-e", "OMP_NUM_THREADS=1", "train"]
    log = stack.compose(*run, env=env, timeout=600)
    print(f"train profile run: {time.monotonic() - start:.1f} s")
    assert "/models/tiny.onnx" in log or "tiny.onnx" in log, log[-2000:]
    stack.compose("restart", "api")
    stack.wait_healthy("api", 1)
    url = stack.api_url()
    models = httpx.get(f"{url}/v1/models", timeout=10).json()
    assert "tiny" in str(models), models
    response = segment(url, png(97, 65, seed=1), model="tiny")
    assert response.headers["x-model"] == "tiny"
    assert mask_of(response).shape == (65, 97)


def test_compose_stop_drains_requests_in_flight(stack) -> None:
    url = stack.api_url()
    big = png(1600, 1000, seed=2)  # tiled; a concurrency of 2, so the later requests queue
    # Enough requests that some are still in flight at the stop on a fast CPU too (seen: four
    # of these done in under a second), and few enough for the queue (8) and the drain grace.
    start = time.monotonic()
    mask_of(segment(url, big))
    one = time.monotonic() - start
    count = min(10, max(4, math.ceil(3.0 / one)))
    with ThreadPoolExecutor(count + 1) as pool:
        futures = [pool.submit(segment, url, big) for _ in range(count)]
        time.sleep(0.2)
        in_flight = sum(not f.done() for f in futures)
        assert in_flight >= 2, f"only {in_flight} request(s) left in flight at the stop"
        stopping = pool.submit(stack.compose, "stop", "api")
        shapes = [mask_of(f.result()).shape for f in futures]
        stopping.result(timeout=60)
    print(f"stop with {in_flight} of {count} requests in flight ({one:.2f} s each alone)")
    assert shapes == [(1000, 1600)] * count, "0 failed: every request in flight completes"
    (api,) = [
        c
        for c in stack.docker(
            "ps",
            "-a",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={stack.project}",
            "--filter",
            "label=com.docker.compose.service=api",
        ).split()
    ]
    state = stack.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", api).split()
    assert state == ["exited", "0"], state


def test_scale_profile_spreads_requests_over_three_replicas(stack) -> None:
    start = time.monotonic()
    stack.compose("--profile", "scale", "up", "-d", "--wait", "--scale", "api=3", timeout=240)
    print(f"--profile scale up --scale api=3 --wait: {time.monotonic() - start:.1f} s")
    hostnames = {c["Config"]["Hostname"] for c in stack.containers("api")}
    assert len(hostnames) == 3
    lb = f"http://127.0.0.1:{LB_PORT}"
    image = png(64, 48)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: segment(lb, image), range(30)))
    served = [a.headers.get("x-replica") for a in answers]
    assert all(mask_of(a).shape == (48, 64) for a in answers)
    assert set(served) == hostnames, {h: served.count(h) for h in set(served)}


def test_killing_a_replica_mid_run_loses_no_request(stack) -> None:
    lb = f"http://127.0.0.1:{LB_PORT}"
    image = png(640, 480, seed=4)
    victim = stack.containers("api")[0]
    total, done = 40, []

    def one(i: int):
        response = segment(lb, image)
        done.append(i)
        return response

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        deadline = time.monotonic() + 120
        while len(done) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        stack.docker("kill", victim["Id"])  # SIGKILL: its requests in flight are cut off
        answers = [f.result() for f in futures]
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * total, {s: statuses.count(s) for s in set(statuses)}
    assert all(mask_of(a).shape == (480, 640) for a in answers)
    served = {a.headers["x-replica"] for a in answers}
    assert len(served) == 3, served  # the victim answered some before it died
