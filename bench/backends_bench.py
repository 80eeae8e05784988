"""Every backend x precision side by side: speed at 512^2 and 4096^2 (tiled), ISBI accuracy, RSS.

One run, 2 threads, on models trained on ISBI 2012 (``--unet``/``--fcn8s`` checkpoints; short
runs are fine, say so when you report). Per model:

1. export (parity-checked) and quantize to INT8 (MinMax, calibrated on the ISBI *training*
   split), then ``fcn export``'s precision checks on the ISBI *validation* split: mIoU of each
   path and its argmax agreement with ONNX Runtime fp32, recorded in the metadata;
2. median latency of ``Engine.run_normalised`` at 512x512 for ort fp32/int8, openvino
   fp32/bf16/int8 and ``auto`` (what ``EngineConfig()`` picks from the recorded checks),
   repetitions interleaved so machine noise hits all alike;
3. U-Net only: ``Engine.predict`` on a 4096x4096 image (tiled, 512 windows), 1 run each;
4. U-Net only: RSS of a fresh process segmenting 200 distinct image sizes, per backend (and,
   for OpenVINO bf16/INT8, once more with oneDNN's default primitive cache: the "before" rows).

On a CPU without native bf16 the bf16 path is not servable (``auto`` never picks it, an
explicit request is refused); its row is still timed, as ``openvino bf16 (forced)``, loaded
past the engine's check, to show what it would cost. ``auto`` measures its candidates on this
CPU at load (service/backends/probe.py) in a fresh cache, so its row is what a first start
here picks. The JSON records the CPU (model, ISA flags, load), the command and what each
field means; ``--skip-rss`` leaves out part 4 (the slow one).

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/backends_bench.py \\
        --unet runs/isbi-unet34/best.pt --fcn8s runs/isbi-fcn8s/best.pt

Writes bench/results/backends_bench.json and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _cpu import cpu_info, cpu_label
from _paths import SHARED_DATA, shown

from service.backends import cpu_has_bf16
from service.engine import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
ISBI = SHARED_DATA / "isbi2012_em_membrane"
THREADS = 2
ONEDNN_DEFAULT_CACHE = 1024  # oneDNN's own primitive-cache size, before the backend bounds it
PATHS = (
    ("ort", "fp32"),
    ("ort", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("auto", "auto"),
)


FORCED_BF16 = "openvino bf16 (forced)"
COLUMNS = {
    "latency_512": {
        "model": "network (unet-r34: trained on ISBI; fcn8s: random weights unless --fcn8s)",
        "path": "what was asked: backend precision, or auto",
        "served": "what actually ran (auto's pick)",
        "median_ms": "median of Engine.run_normalised on one 1xCx512x512 input, ms",
        "samples_ms": "every timed repetition, ms (interleaved with the other paths)",
        "speedup": "ORT fp32 median / this median, same run",
        "miou": "ISBI validation mIoU, points (0-100), as fcn export's precision checks measured",
        "miou_delta": "miou minus ORT fp32's, points",
        "argmax_agreement": "fraction of validation pixels with the same class as ORT fp32",
    },
    "tiled": {"seconds": "Engine.predict of one big x big image (512 windows), one run"},
    "rss_200_sizes": {"*_mb": "resident memory of a fresh process, MB, over 200 image sizes"},
}


def label(backend: str, precision: str) -> str:
    return "auto" if backend == "auto" else f"{backend} {precision}"


def random_fcn8s(work: Path) -> Path:
    """FCN-8s for ISBI's shape (1 channel, 2 classes) with random weights: speed only."""
    import torch

    import fcn
    from training.export.onnx import export_model

    torch.manual_seed(0)
    model = fcn.build_model("fcn8s", num_classes=2, in_channels=1).eval()
    with torch.no_grad():  # FCN score layers start at zero; random weights everywhere instead
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.01)
    config = {
        "model": {"arch": "fcn8s", "num_classes": 2, "in_channels": 1, "options": {}},
        "data": {"mean": [0.5], "std": [0.25], "ignore_index": 255, "mask_values": [0, 255]},
    }
    return export_model(model, config, work / "fcn8s.onnx", parity_sizes=((97, 130),)).path


def prepare(name: str, checkpoint: Path | None, work: Path, log) -> dict:
    from training.export.onnx import export_checkpoint
    from training.export.quantize import calibration_images, quantize_int8
    from training.export.verify import check_precisions, record_checks

    if checkpoint is None:
        fp32 = random_fcn8s(work)
    else:
        fp32 = export_checkpoint(checkpoint, work / f"{name}.onnx", parity_sizes=((97, 130),)).path
    log(f"{name}: exported {fp32.stat().st_size / 1e6:.0f} MB")
    images = calibration_images(ISBI, limit=8)
    int8 = quantize_int8(fp32, work / f"{name}.int8.onnx", images, check_images=1).path
    log(f"{name}: quantized")
    checks = check_precisions(fp32, int8, root=str(ISBI), checkpoint=checkpoint)
    record_checks(checks, fp32, int8)
    log(f"{name}: precision checks {json.dumps(checks['results'])}")
    engines = {}
    for backend, precision in PATHS:
        config = EngineConfig(
            intra_op_threads=THREADS, inter_op_threads=1, backend=backend, precision=precision
        )
        if precision == "bf16" and not cpu_has_bf16():
            from service.backends.openvino import OpenVinoBackend

            try:
                runner = OpenVinoBackend(fp32, "bf16", config)
            except Exception as exc:  # noqa: BLE001 - e.g. kernels capped by ONEDNN_MAX_CPU_ISA
                # (a bf16 CPU capped at AVX2 has no bf16 kernels: the compile fails)
                log(f"{name}: bf16 forced on a CPU without it does not compile: {exc}")
                continue
            engines[FORCED_BF16] = Engine(runner, config)
            hint = runner.compiled.get_property("INFERENCE_PRECISION_HINT")
            log(f"{name}: bf16 forced on a CPU without it; OpenVINO runs it as {hint}")
            continue
        start = time.perf_counter()
        engines[label(backend, precision)] = Engine.load(fp32, config)
        load_s = time.perf_counter() - start
    auto = engines["auto"]  # loaded last: load_s is its load, speed probe included
    log(
        f"{name}: auto -> {auto.backend_name} {auto.precision} ({auto.choice.reason}), {load_s:.1f}s"
    )
    picked = {"served": f"{auto.backend_name} {auto.precision}", "reason": auto.choice.reason}
    return {
        "fp32": fp32,
        "int8": int8,
        "checks": checks,
        "engines": engines,
        "auto": {**picked, "load_s_with_probe": round(load_s, 2)},
    }


def interleaved(contenders: dict, reps: int) -> dict[str, list[float]]:
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:
        contenders[name]()  # warm-up
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            time.sleep(0.02)
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def accuracy(setup: dict, key: str) -> dict:
    """mIoU (points) and agreement with ort fp32 of one row, from the recorded checks."""
    checks = setup["checks"]
    engine = setup["engines"][key]
    path = f"{engine.backend_name}/{engine.precision}"
    if key == FORCED_BF16:
        return {}
    if path == "ort/fp32":
        return {"miou": checks["reference"]["miou"], "miou_delta": 0.0, "argmax_agreement": 1.0}
    return checks["results"].get(path, {})


_RSS_CHILD = """
import sys, numpy as np
from service.engine import Engine, EngineConfig
def rss():
    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS'))) / 1024
engine = Engine.load(sys.argv[1], EngineConfig(intra_op_threads=2, inter_op_threads=1,
                     backend=sys.argv[2], precision=sys.argv[3]))
rng = np.random.default_rng(0)
sizes = set()
while len(sizes) < 200:
    sizes.add((int(rng.integers(32, 400)), int(rng.integers(32, 400))))
trace = []
for i, (h, w) in enumerate(sorted(sizes, key=lambda s: rng.random())):
    engine.predict(rng.integers(0, 256, (h, w, engine.metadata.in_channels), dtype=np.uint8))
    trace.append(rss())
print(trace[19], max(trace[20:]), trace[-1])
"""


def rss_over_sizes(
    model: Path, backend: str, precision: str, env: dict[str, str] | None = None
) -> dict:
    """RSS after 20 sizes, the maximum over the next 180, and at the end (MB).

    ``env`` adds environment variables to the child (e.g. oneDNN's cache size, for the
    before/after rows).
    """
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(model), backend, precision],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    ).stdout.split()
    after_20, peak, end = map(float, out)
    return {
        "after_20_mb": after_20,
        "max_after_mb": peak,
        "end_mb": end,
        "growth": peak / after_20 - 1,
    }


def runtime_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for package in ("onnxruntime", "openvino", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet", type=Path, required=True, help="ISBI U-Net-r34 checkpoint")
    parser.add_argument(
        "--fcn8s", type=Path, help="ISBI FCN-8s checkpoint (default: random weights, speed only)"
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--big", type=int, default=4096, help="tiled image side (0: skip)")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the RSS part")
    parser.add_argument("--skip-fcn8s", action="store_true", help="U-Net-r34 only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/backends_bench.json")
    parser.add_argument(
        "--keep",
        type=Path,
        help="write the exported models here and keep them (default: a temp dir)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f}s] {text}", flush=True)

    rows, big_rows, rss, auto_loads = [], [], {}, {}
    models = {"unet-r34": args.unet, "fcn8s": args.fcn8s}
    if args.skip_fcn8s:
        del models["fcn8s"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "xdg")  # auto measures afresh
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        for name, checkpoint in models.items():
            setup = prepare(name, checkpoint, Path(tmp), log)
            engines = setup["engines"]
            channels = engines["ort fp32"].metadata.in_channels
            x = np.random.default_rng(0).standard_normal((1, channels, 512, 512), np.float32)
            reps = args.reps if name == "unet-r34" else max(2, args.reps - 2)
            times = interleaved(
                {k: (lambda e=e, x=x: e.run_normalised(x)) for k, e in engines.items()}, reps
            )
            base = statistics.median(times["ort fp32"])
            for key, samples in times.items():
                engine = engines[key]
                rows.append(
                    {
                        "model": name,
                        "path": key,
                        "served": f"{engine.backend_name} {engine.precision}",
                        "median_ms": 1e3 * statistics.median(samples),
                        "samples_ms": [round(1e3 * s, 1) for s in samples],
                        "speedup": base / statistics.median(samples),
                        "reason": engine.choice.reason if engine.choice else "forced",
                        **accuracy(setup, key),
                    }
                )
            for r in rows[-len(times) :]:
                log(
                    f"{name} 512^2 {r['path']} ({r['served']}): {r['median_ms']:.0f} ms, "
                    f"{r['speedup']:.2f}x, mIoU {r.get('miou', float('nan')):.2f} "
                    f"({r.get('miou_delta', float('nan')):+.2f})"
                )
            if name == "unet-r34" and args.big:
                pixels = np.random.default_rng(1).integers(
                    0, 256, (args.big, args.big, channels), dtype=np.uint8
                )
                for key, engine in engines.items():
                    start = time.perf_counter()
                    engine.predict(pixels)
                    big_rows.append(
                        {
                            "model": name,
                            "path": key,
                            "side": args.big,
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    log(f"{name} {args.big}^2 {key}: {big_rows[-1]['seconds']:.1f}s")
                base_big = next(r["seconds"] for r in big_rows if r["path"] == "ort fp32")
                for r in big_rows:
                    r["speedup"] = base_big / r["seconds"]
                for backend, precision in (
                    ()
                    if args.skip_rss
                    else (
                        ("ort", "fp32"),
                        ("openvino", "fp32"),
                        ("openvino", "bf16"),
                        ("openvino", "int8"),
                    )
                ):
                    if precision == "bf16" and not cpu_has_bf16():
                        continue
                    rss[f"{backend} {precision}"] = rss_over_sizes(
                        setup["fp32"], backend, precision
                    )
                    log(f"RSS 200 sizes {backend} {precision}: {rss[f'{backend} {precision}']}")
                # Before the oneDNN primitive-cache bound: its default size, set by the user
                # (the backend leaves a user's setting alone).
                for precision in () if args.skip_rss else ("bf16", "int8"):
                    if precision == "bf16" and not cpu_has_bf16():
                        continue
                    key = f"openvino {precision}, oneDNN cache {ONEDNN_DEFAULT_CACHE} (before)"
                    rss[key] = rss_over_sizes(
                        setup["fp32"],
                        "openvino",
                        precision,
                        {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ONEDNN_DEFAULT_CACHE)},
                    )
                    log(f"RSS 200 sizes {key}: {rss[key]}")
            auto_loads[name] = setup["auto"]
            del setup, engines
    print(
        "\n| model | path | served as | 512x512 ms | vs ORT fp32 | ISBI val mIoU | delta | agreement |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['path']} | {r['served']} | {r['median_ms']:.0f} | "
            f"{r['speedup']:.2f}x | {r.get('miou', float('nan')):.2f} | "
            f"{r.get('miou_delta', float('nan')):+.2f} | {r.get('argmax_agreement', float('nan')):.4%} |"
        )
    for r in big_rows:
        print(
            f"{r['model']} {r['side']}^2 tiled {r['path']}: {r['seconds']:.1f}s ({r['speedup']:.2f}x)"
        )
    for key, value in rss.items():
        print(
            f"RSS over 200 sizes, {key}: {value['after_20_mb']:.0f} -> max {value['max_after_mb']:.0f} MB "
            f"({100 * value['growth']:+.1f}%)"
        )
    cpu = cpu_info()
    print(f"CPU: {cpu_label(cpu)}; load average at the end {cpu['loadavg']}")
    result = {
        "description": __doc__.split("\n\n")[0],
        "command": " ".join(["python", *sys.argv]),
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "machine": {
            "threads": THREADS,
            "cpu_bf16": cpu_has_bf16(),
            "loadavg_at_end": os.getloadavg(),
            "runtimes": runtime_versions(),
        },
        "columns": COLUMNS,
        "checkpoints": {k: shown(v) for k, v in models.items()},
        "auto": auto_loads,
        "latency_512": rows,
        "tiled": big_rows,
        "rss_200_sizes": rss,
        "seconds": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
