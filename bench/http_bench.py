"""HTTP serving speed: in-process pipeline vs ``fcn serve`` vs a plain torch FastAPI endpoint.

One run on one machine, the same network (U-Net resnet18, 3 -> 4 classes, random weights saved
as a checkpoint with ``training.checkpoint`` and exported with ``training.export.onnx``), the same
512x512 JPEG, answered with a class-index PNG, at client concurrency 1, 2, 4 and 8:

1. ``inprocess`` — ``service.pipeline`` decode + predict + encode in ``c`` threads sharing one
   engine configured like the server, on a FIFO pool of ``slots`` threads (the limit: no HTTP);
2. ``fcn-serve`` — ``fcn serve`` in a uvicorn subprocess, multipart uploads from ``c`` client
   threads with keep-alive connections;
3. ``torch-endpoint`` — bench/torch_endpoint.py (FastAPI + torch eager, what a user would
   otherwise write) in a uvicorn subprocess, the same requests.

Both of the first two run for each ``--configs`` entry ``SLOTSxTHREADS`` (inference slots x
ONNX Runtime intra-op threads; default ``2x1,1x2`` on a 2-core machine). All servers run for the
whole benchmark; at each concurrency level every contender gets a warm-up, then the contenders
take turns in ``--rounds`` blocks of ``--requests / --rounds`` timed requests each (so machine
noise lands on all of them alike). Latency is measured by the client, throughput is requests /
wall time of the blocks. Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/http_bench.py

Writes bench/results/http_bench.json and prints a table plus the targets of issue 7.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
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
from _cpu import cpu_info
from _paths import ROOT
from PIL import Image

import fcn
from service import pipeline
from service.engine import Engine, EngineConfig
from service.http.launcher import Server, free_port, launch, stop
from training.checkpoint import save_checkpoint
from training.export.onnx import export_checkpoint

CONCURRENCY = (1, 2, 4, 8)
CONFIG = {
    "model": {
        "arch": "unet",
        "num_classes": 4,
        "in_channels": 3,
        "options": {"encoder": "resnet18"},
    },
    "data": {
        "classes": ["background", "circle", "square", "triangle"],
        "palette": [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "ignore_index": 255,
    },
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


def summarise(blocks: list[tuple[list[float], float]]) -> dict:
    """Latency percentiles over every request; throughput per block and over all blocks.

    ``throughput_rps`` is the median over the blocks: other users of a shared machine disturb
    a block now and then, and the median ignores the odd disturbed block (for every contender
    alike); ``throughput_pooled_rps`` is all requests over all block time.
    """
    ms = sorted(1000 * t for latencies, _ in blocks for t in latencies)
    per_block = [len(latencies) / wall for latencies, wall in blocks]
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "throughput_rps": round(statistics.median(per_block), 3),
        "throughput_pooled_rps": round(len(ms) / sum(wall for _, wall in blocks), 3),
        "block_throughputs_rps": [round(x, 3) for x in per_block],
    }


def timed_block(call: Callable[[], None], concurrency: int, requests: int) -> tuple[list, float]:
    """``requests`` calls from ``concurrency`` threads: (latency per call, wall time)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def timed(_: int) -> None:
        start = time.perf_counter()
        call()
        with lock:
            latencies.append(time.perf_counter() - start)

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(timed, range(requests)))
        wall = time.perf_counter() - start
    return latencies, wall


def http_caller(url: str, jpeg: bytes) -> Callable[[], None]:
    """One keep-alive client per calling thread, multipart upload like ``curl -F``."""
    local = threading.local()

    def call() -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=120)
        response = client.post(url, files={"image": ("photo.jpg", jpeg, "image/jpeg")})
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")

    return call


def inprocess_caller(onnx_path: Path, jpeg: bytes, slots: int, threads: int, args):
    """The pipeline on a FIFO pool of ``slots`` threads (like the server's admission)."""
    config = EngineConfig(
        intra_op_threads=threads,
        inter_op_threads=1,
        backend=args.backend,
        precision=args.precision,
    )
    engine = Engine.load(onnx_path, config)
    pool = ThreadPoolExecutor(slots)

    def work() -> None:
        seg = pipeline.segment(engine, jpeg)
        pipeline.encode(engine, seg, "index")

    return lambda: pool.submit(work).result(), pool


def parse_config(text: str) -> tuple[int, int]:
    """``"2x1"`` -> (2 slots, 1 ONNX Runtime thread each)."""
    slots, _, threads = text.partition("x")
    return int(slots), int(threads)


def targets_for(inp: dict, srv: dict, tch: dict) -> dict:
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
    return {
        name: {
            "value": round(v, 3),
            "target": f"{op} {bound}",
            "met": bool(v <= bound if op == "<=" else v >= bound),
        }
        for name, (v, op, bound) in checks.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="timed requests per level")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved blocks per level")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument(
        "--configs",
        default="2x1,1x2",
        help="fcn serve SLOTSxTHREADS settings to measure (the in-process loop uses the same)",
    )
    parser.add_argument("--backend", default="ort", help="fcn serve --backend (ort)")
    parser.add_argument("--precision", default="fp32", help="fcn serve --precision (fp32)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "http_bench.json"))
    args = parser.parse_args()
    configs = [parse_config(c) for c in args.configs.split(",")]
    work = Path(tempfile.mkdtemp(prefix="http_bench_"))
    print(f"building the model in {work} ...", flush=True)
    checkpoint, onnx_path = make_model(work)
    jpeg = make_jpeg()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCN_")}
    env["PYTHONPATH"] = str(ROOT)

    callers: dict[str, Callable[[], None]] = {}
    servers: list[Server] = []
    pools: list[ThreadPoolExecutor] = []
    try:
        for slots, threads in configs:
            tag = f"{slots}x{threads}"
            callers[f"inprocess {tag}"], pool = inprocess_caller(
                onnx_path, jpeg, slots, threads, args
            )
            pools.append(pool)
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "fcn.cli",
                "serve",
                "--model",
                f"bench={onnx_path}",
                "--port",
                str(port),
                "--max-concurrency",
                str(slots),
                "--intra-op-threads",
                str(threads),
                "--max-queue",
                "64",
                "--no-access-log",
                "--log-level",
                "warning",
                "--backend",
                args.backend,
                "--precision",
                args.precision,
            ]
            log = work / f"serve-{tag}.log"
            servers.append(launch(command, port, log, env, 120, ROOT, inherit_env=False))
            callers[f"fcn-serve {tag}"] = http_caller(f"http://127.0.0.1:{port}/v1/segment", jpeg)
        port = free_port()
        command = [
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
        log = work / "torch.log"
        servers.append(launch(command, port, log, torch_env, 120, ROOT, "/healthz", False))
        callers["torch-endpoint"] = http_caller(f"http://127.0.0.1:{port}/v1/segment", jpeg)

        # Contenders take turns in blocks, so machine noise lands on all of them alike.
        raw: dict[str, dict[int, list]] = {name: {c: [] for c in CONCURRENCY} for name in callers}
        load: dict[int, list[float]] = {}
        block = max(1, args.requests // args.rounds)
        names = list(callers)
        for c in CONCURRENCY:
            print(f"concurrency {c} ...", flush=True)
            for name in names:
                timed_block(callers[name], c, max(args.warmup, c))
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    latencies, wall = timed_block(callers[name], c, block)
                    raw[name][c].append((latencies, wall))
            load[c] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for server in servers:
            stop(server, 30)
        for pool in pools:
            pool.shutdown()

    results = {
        name: {c: summarise(blocks) for c, blocks in levels.items()} for name, levels in raw.items()
    }
    targets = {
        f"{s}x{t}": targets_for(
            results[f"inprocess {s}x{t}"], results[f"fcn-serve {s}x{t}"], results["torch-endpoint"]
        )
        for s, t in configs
    }
    print(f"\n{'contender':<18}{'c':>3}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'req/s':>9}")
    for name, levels in results.items():
        for c, r in levels.items():
            print(
                f"{name:<18}{c:>3}{r['p50_ms']:>10.1f}{r['p90_ms']:>10.1f}{r['p99_ms']:>10.1f}"
                f"{r['throughput_rps']:>9.2f}"
            )
    for tag, checks in targets.items():
        print(f"\nfcn serve {tag} (slots x ONNX Runtime threads):")
        for name, t in checks.items():
            verdict = "met" if t["met"] else "NOT met"
            print(f"  {name:<40}{t['value']:>8.3f}  target {t['target']:<8} {verdict}")

    report = {
        "cpu": cpu_info(),
        "what": "512x512 JPEG -> index PNG; U-Net resnet18 (random weights), 4 classes",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
        },
        "backend": args.backend,
        "precision": args.precision,
        "requests_per_level": block * args.rounds,
        "load_average_after_level": {str(c): v for c, v in load.items()},
        "rounds": args.rounds,
        "results": {name: {str(c): r for c, r in lv.items()} for name, lv in results.items()},
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
