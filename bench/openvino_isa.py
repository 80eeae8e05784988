"""Does OpenVINO honour ``ONEDNN_MAX_CPU_ISA``? (Can an AMX box pretend to be an AVX2 one?)

oneDNN caps the instruction set its kernels use at ``ONEDNN_MAX_CPU_ISA`` (``AVX2``,
``SSE41``, ...; read once per process). ONNX Runtime's CPU kernels (MLAS) do not use oneDNN;
OpenVINO's CPU plugin does, but ships its own copy of it. This script compiles one model with
OpenVINO in a fresh process per setting and reads back what the plugin says it runs: the
kernel (``primitiveType``, e.g. ``brgconv_avx512_amx``, ``jit_avx2``) of every convolution in
the runtime graph, plus the median latency at 512x512. If a lower cap changes the kernels, the
variable is honoured.

    flock /tmp/fcn-heavy.lock env PYTHONPATH=$PWD .venv/bin/python bench/openvino_isa.py

Writes bench/results/openvino_isa.json (default model: the bundled one) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from _cpu import cpu_info, cpu_label

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("", "AVX512_CORE", "AVX2", "SSE41")  # "" = the variable unset

_CHILD = """
import collections, json, statistics, sys, time
import numpy as np, openvino as ov
core = ov.Core()
model = core.read_model(sys.argv[1])
compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": sys.argv[2],
                              "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"})
kernels = collections.Counter()
for op in compiled.get_runtime_model().get_ordered_ops():
    info = op.get_rt_info()
    if info["layerType"].astype(str) == "Convolution":
        kernels[info["primitiveType"].astype(str)] += 1
channels = model.inputs[0].get_partial_shape()[1].get_length()
x = np.random.default_rng(0).standard_normal((1, channels, 512, 512), np.float32)
request = compiled.create_infer_request()
request.infer({0: x})
times = []
for _ in range(5):
    start = time.perf_counter(); request.infer({0: x}); times.append(time.perf_counter() - start)
print(json.dumps({"kernels": dict(kernels), "median_ms": 1e3 * statistics.median(times)}))
"""


def run(model: Path, isa: str, precision: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
    }
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model), precision],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an .onnx file (default: the bundled model)")
    parser.add_argument("--precision", default="f32", help="OpenVINO inference precision hint")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/openvino_isa.json")
    args = parser.parse_args()
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from service.models import bundled_model_path

        args.model = bundled_model_path()
    rows = []
    for isa in SETTINGS:
        row = {"ONEDNN_MAX_CPU_ISA": isa or "(unset)", **run(args.model, isa, args.precision)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    baseline = rows[0]["kernels"]
    honoured = any(r["kernels"] != baseline for r in rows[1:])
    print(f"\nCPU: {cpu_label()}")
    print("| ONEDNN_MAX_CPU_ISA | convolution kernels | 512x512 ms |")
    print("| --- | --- | --- |")
    for r in rows:
        kernels = ", ".join(f"{k} x{n}" for k, n in r["kernels"].items())
        print(f"| {r['ONEDNN_MAX_CPU_ISA']} | {kernels} | {r['median_ms']:.1f} |")
    print(f"honoured (kernels change with the cap): {honoured}")
    from importlib import metadata

    result = {
        "description": __doc__.split("\n\n")[0],
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "openvino": metadata.version("openvino"),
        "model": args.model.name,
        "precision_hint": args.precision,
        "columns": {
            "kernels": "convolution primitive types in OpenVINO's runtime graph -> count",
            "median_ms": "median of 5 inferences of one 512x512 input, 2 threads",
        },
        "rows": rows,
        "honoured": honoured,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
