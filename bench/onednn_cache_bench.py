"""What bounding oneDNN's primitive cache costs: OpenVINO latency at new and at seen shapes.

The OpenVINO backend caps oneDNN's process-wide primitive cache at 64 (service/backends/
openvino.py) so RSS stays flat over many image sizes. A smaller cache can only cost time when a
kernel is created again, i.e. at a shape OpenVINO has not seen (or has evicted). Per cache size
(1024 = oneDNN's default, 64 = the backend's, 0 = off), in a fresh process each (oneDNN reads
the size once): median latency at 512x512 after warm-up, and over 40 new sizes the first
inference at each size and the second one. Alternating repeats so noise hits all sizes alike.

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/onednn_cache_bench.py \\
        --model runs/bench-models/unet-r34.onnx

``--model`` is an fp32 export with its ``.int8.onnx`` sibling (``backends_bench.py --keep``).
Writes bench/results/onednn_cache_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
CAPACITIES = (1024, 64, 0)

_CHILD = """
import json, statistics, sys, time
import numpy as np
from service.engine import Engine, EngineConfig
model, precision = sys.argv[1:3]
engine = Engine.load(model, EngineConfig(intra_op_threads=2, inter_op_threads=1,
                     backend="openvino", precision=precision))
rng = np.random.default_rng(0)
channels = engine.metadata.in_channels
x = rng.standard_normal((1, channels, 512, 512), np.float32)
engine.run_normalised(x)
fixed = []
for _ in range(7):
    t = time.perf_counter(); engine.run_normalised(x); fixed.append(time.perf_counter() - t)
sizes = [(32 * h, 32 * w) for h in range(2, 13) for w in range(2, 13)]
rng.shuffle(sizes)
first, second = [], []
for h, w in sizes[:40]:
    y = rng.standard_normal((1, channels, h, w), np.float32)
    t0 = time.perf_counter(); engine.run_normalised(y)
    t1 = time.perf_counter(); engine.run_normalised(y)
    t2 = time.perf_counter()
    first.append(t1 - t0); second.append(t2 - t1)
ms = lambda v: round(1e3 * statistics.median(v), 1)
print(json.dumps({"fixed_512_ms": ms(fixed), "new_shape_first_ms": ms(first),
                  "new_shape_second_ms": ms(second),
                  "first_minus_second_s": round(sum(first) - sum(second), 2)}))
"""


def measure(model: Path, precision: str, capacity: int) -> dict:
    env = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(capacity)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model), precision],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="fp32 .onnx (int8 sibling)")
    parser.add_argument("--precisions", default="bf16,int8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/onednn_cache_bench.json")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {}
    for precision in args.precisions.split(","):
        for _ in range(args.repeats):
            for capacity in CAPACITIES:
                row = measure(args.model, precision, capacity)
                runs.setdefault(f"{precision} cache {capacity}", []).append(row)
                print(f"{precision} cache {capacity}: {row}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"cpu": cpu_info(), "model": str(args.model), "runs": runs}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
