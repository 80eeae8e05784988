"""HTTP serving speed: in-process pipeline vs ``fcn serve`` vs a plain torch FastAPI endpoint.

One run on one machine, the same network (U-Net resnet18, 3 -> 4 classes, random weights saved
as a checkpoint with ``training.checkpoint`` and exported with ``training.export``), the same
512x512 JPEG, answered with a class-index PNG, at client concurrency 1, 2, 4 and 8:

1. ``inprocess`` — ``service.pipeline`` decode + predict + encode in ``c`` threads sharing one
   engine configured like the server (the limit: no HTTP at all);
2. ``fcn-serve`` — ``fcn serve`` in a uvicorn subprocess, multipart uploads from ``c`` client
   threads with keep-alive connections;
3. ``torch-endpoint`` — bench/torch_endpoint.py (FastAPI + torch eager, what a user would
   otherwise write) in a uvicorn subprocess, the same requests.

Each level: a warm-up, then ``--requests`` timed requests; latency is measured by the client,
throughput is requests / wall time. Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/http_bench.py

Writes bench/results/http_bench.json and prints a table plus the targets of issue 7.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import fcn
from service import pipeline
from service.engine import Engine, EngineConfig
from training.checkpoint import save_checkpoint
from training.export import export_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 2, 4, 8)
CONFIG = {
    "model": {
        "arch": "unet",
        "num_classes": 4,
        "in_channels": 3,
        "options": {"encoder": "resnet18"},
    },
    "classes": ["background", "circle", "square", "triangle"],
    "palette": [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "ignore_index": 255,
}


def make_model(work: Path) -> tuple[Path, Path]:
    """A checkpoint of the benchmark network and its ONNX export."""
    torch.manual_seed(0)
    cfg = CONFIG["model"]
    model = fcn.build_model(cfg["arch"], num_classes=cfg["num_classes"], **cfg["options"])
    state = {"model": model.state_dict(), "epoch": 0, "step": 0, "config": CONFIG}
    checkpoint = save_checkpoint(work / "best.pt", state)
    onnx_path = export_checkpoint(checkpoint, work / "model.onnx").path
    return checkpoint, onnx_path


def make_jpeg(side: int = 512) -> bytes:
    """A photo-like 512x512 JPEG: smooth gradients, shapes and noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([x, y, 1 - x * y], axis=-1) * 200
    base[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.04] = (230, 40, 60)
    base[(abs(x - 0.25) < 0.1) & (abs(y - 0.75) < 0.1)] = (40, 200, 80)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def summarise(latencies: list[float], wall: float) -> dict:
    ms = sorted(1000 * t for t in latencies)
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "throughput_rps": round(len(ms) / wall, 3),
    }


def drive(call: Callable[[], None], concurrency: int, requests: int, warmup: int) -> dict:
    """Run ``call`` ``requests`` times from ``concurrency`` threads; latency per call."""
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: call(), range(max(warmup, concurrency))))
        latencies: list[float] = []
        lock = threading.Lock()

        def timed(_: int) -> None:
            start = time.perf_counter()
            call()
            with lock:
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        list(pool.map(timed, range(requests)))
        wall = time.perf_counter() - start
    return summarise(latencies, wall)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command[:4]} did not start:\n{log.read_text()}")


def http_caller(url: str, jpeg: bytes) -> Callable[[], None]:
    local = threading.local()

    def call() -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
        response = client.post(url, files={"image": ("photo.jpg", jpeg, "image/jpeg")})
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")

    return call


def bench_server(
    name: str, command: list[str], port: int, env: dict, work: Path, jpeg: bytes, args
) -> dict:
    process = start(command, port, env, work / f"{name}.log")
    try:
        call = http_caller(f"http://127.0.0.1:{port}/v1/segment", jpeg)
        return {c: drive(call, c, args.requests, args.warmup) for c in CONCURRENCY}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="timed requests per level")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2, help="fcn serve --max-concurrency")
    parser.add_argument("--threads", type=int, default=1, help="fcn serve --intra-op-threads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "http_bench.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="http_bench_"))
    print(f"building the model in {work} ...", flush=True)
    checkpoint, onnx_path = make_model(work)
    jpeg = make_jpeg()
    results: dict[str, dict] = {}

    config = EngineConfig(intra_op_threads=args.threads, inter_op_threads=1)
    engine = Engine.load(onnx_path, config)

    def inprocess() -> None:
        seg = pipeline.segment(engine, jpeg)
        pipeline.encode(engine, seg, "index")

    print("in-process ...", flush=True)
    # Like the server: at most `slots` inferences at once, more callers wait.
    gate = threading.Semaphore(args.slots)

    def gated() -> None:
        with gate:
            inprocess()

    results["inprocess"] = {c: drive(gated, c, args.requests, args.warmup) for c in CONCURRENCY}

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("FCN_")}
    port = free_port()
    print("fcn serve ...", flush=True)
    serve_cmd = [
        sys.executable,
        "-m",
        "fcn.cli",
        "serve",
        "--model",
        f"bench={onnx_path}",
        "--port",
        str(port),
        "--max-concurrency",
        str(args.slots),
        "--intra-op-threads",
        str(args.threads),
        "--max-queue",
        "64",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    results["fcn-serve"] = bench_server("fcn-serve", serve_cmd, port, env, work, jpeg, args)

    port = free_port()
    print("torch endpoint ...", flush=True)
    torch_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.torch_endpoint:app",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    torch_env = {**env, "FCN_BENCH_CHECKPOINT": str(checkpoint)}
    results["torch-endpoint"] = bench_server(
        "torch-endpoint", torch_cmd, port, torch_env, work, jpeg, args
    )

    inp, srv, tch = results["inprocess"], results["fcn-serve"], results["torch-endpoint"]
    checks = {
        "c1_median_latency_ratio_vs_inprocess": (srv[1]["p50_ms"] / inp[1]["p50_ms"], "<=", 1.15),
        "c4_throughput_ratio_vs_inprocess": (
            srv[4]["throughput_rps"] / inp[4]["throughput_rps"],
            ">=",
            0.85,
        ),
        "c4_throughput_ratio_vs_torch": (
            srv[4]["throughput_rps"] / tch[4]["throughput_rps"],
            ">=",
            1.5,
        ),
        "c2_p99_over_p50": (srv[2]["p99_ms"] / srv[2]["p50_ms"], "<=", 1.5),
    }
    targets = {
        name: {
            "value": round(v, 3),
            "target": f"{op} {bound}",
            "met": v <= bound if op == "<=" else v >= bound,
        }
        for name, (v, op, bound) in checks.items()
    }

    print(f"\n{'contender':<16}{'c':>3}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'req/s':>9}")
    for name, levels in results.items():
        for c, r in levels.items():
            print(
                f"{name:<16}{c:>3}{r['p50_ms']:>10.1f}{r['p90_ms']:>10.1f}{r['p99_ms']:>10.1f}"
                f"{r['throughput_rps']:>9.2f}"
            )
    print()
    for name, t in targets.items():
        print(
            f"{name:<40}{t['value']:>8.3f}  target {t['target']:<8} {'met' if t['met'] else 'NOT met'}"
        )

    report = {
        "what": "512x512 JPEG -> index PNG; U-Net resnet18 (random weights), 4 classes",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
        },
        "serve": {"slots": args.slots, "intra_op_threads": args.threads},
        "requests_per_level": args.requests,
        "results": {
            name: {str(c): r for c, r in levels.items()} for name, levels in results.items()
        },
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
