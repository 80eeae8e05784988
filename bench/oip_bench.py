"""Open Inference Protocol vs ``/v1/segment``: latency of the same image through one ``fcn serve``.

One server (the bundled default model), one image (a Dubai aerial tile of odd size from
``../shared/data``, or a generated one without it), client concurrency 1. Three contenders, one
request each per round in a shuffled order (so machine noise lands on all alike):

1. ``v1`` — ``POST /v1/segment`` multipart (like ``curl -F``), answered with the index PNG;
2. ``v2`` — ``POST /v2/models/default/infer`` with the same HTTP client (httpx): the image as a
   binary BYTES input, the mask back as a binary UINT8 output (the binary data extension);
3. ``v2-tritonclient`` — the same call through ``tritonclient.http`` with its defaults (its
   own HTTP stack and tensor handling, for reference).

The claim checked: the median of ``v2`` <= 1.05 x the median of ``v1``. The masks of all three
are compared once, byte for byte. Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/oip_bench.py

Writes bench/results/oip_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _cpu import cpu_info
from _paths import ROOT, SHARED_DATA, shown
from PIL import Image

from service.http.launcher import start, stop

DUBAI = SHARED_DATA / "dubai_aerial/val/images/tile2_004.jpg"
LIMIT = 1.05


def test_image() -> tuple[bytes, str]:
    if DUBAI.is_file():
        return DUBAI.read_bytes(), shown(DUBAI)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (544, 509, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "generated 509x544 JPEG (no ../shared data)"


def v2_body(image: bytes) -> tuple[bytes, dict[str, str]]:
    """The binary-extension request tritonclient would send: BYTES input, binary output."""
    blob = len(image).to_bytes(4, "little") + image
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def contenders(url: str, image: bytes) -> dict:
    """name -> a call returning the mask bytes."""
    import tritonclient.http as triton

    client = httpx.Client(timeout=120)
    body, headers = v2_body(image)
    tc = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)

    def v1() -> bytes:
        r = client.post(f"{url}/v1/segment", files={"image": ("tile.jpg", image, "image/jpeg")})
        r.raise_for_status()
        return np.asarray(Image.open(io.BytesIO(r.content))).tobytes()

    def v2() -> bytes:
        r = client.post(f"{url}/v2/models/default/infer", content=body, headers=headers)
        r.raise_for_status()
        return r.content[int(r.headers["inference-header-content-length"]) :]

    def v2_tritonclient() -> bytes:
        tensor = triton.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
        return tc.infer("default", [tensor]).as_numpy("mask").tobytes()

    return {"v1": v1, "v2": v2, "v2-tritonclient": v2_tritonclient}


def summarise(ms: list[float]) -> dict:
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(min(ms), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150, help="timed requests per contender")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests per contender")
    parser.add_argument("--out", default=str(ROOT / "bench/results/oip_bench.json"))
    args = parser.parse_args()

    image, source = test_image()
    with Image.open(io.BytesIO(image)) as opened:
        size = opened.size
    log = Path(tempfile.mkstemp(prefix="oip-bench-", suffix=".log")[1])
    env = {"PYTHONPATH": str(ROOT)}
    server = start(["--model", "default", "--no-access-log"], log, env=env, cwd=ROOT)
    try:
        calls = contenders(server.url, image)
        masks = {name: call() for name, call in calls.items()}
        same = len(set(masks.values())) == 1
        for call in calls.values():
            for _ in range(args.warmup):
                call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        rng = random.Random(0)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for name in order:
                start_t = time.perf_counter()
                calls[name]()
                times[name].append((time.perf_counter() - start_t) * 1000.0)
    finally:
        stop(server)

    rows = {name: summarise(ms) for name, ms in times.items()}
    base = rows["v1"]["p50_ms"]
    for row in rows.values():
        row["p50_vs_v1"] = round(row["p50_ms"] / base, 3)
    ratio = rows["v2"]["p50_vs_v1"]
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "claim": f"median latency of /v2 infer <= {LIMIT} x /v1/segment's, same image",
        "met": ratio <= LIMIT,
        "ratio_v2_over_v1_p50": ratio,
        "masks_identical": same,
        "image": {"source": source, "width": size[0], "height": size[1], "bytes": len(image)},
        "model": "default (bundled)",
        "concurrency": 1,
        "rounds": args.rounds,
        "contenders": rows,
        "cpu": cpu_info(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"image {source} {size[0]}x{size[1]}, {args.rounds} interleaved rounds, concurrency 1")
    print(f"{'contender':<18}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}{'vs v1':>8}")
    for name, row in rows.items():
        print(
            f"{name:<18}{row['p50_ms']:>9.2f}{row['p90_ms']:>9.2f}{row['mean_ms']:>9.2f}"
            f"{row['p50_vs_v1']:>8.3f}"
        )
    verdict = "met" if result["met"] else "NOT met"
    print(f"masks identical: {same}; v2/v1 median {ratio:.3f} (<= {LIMIT}: {verdict})")
    print(f"wrote {shown(args.out)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
