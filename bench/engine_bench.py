"""Inference speed: torch eager vs ONNX Runtime FP32 vs ORT static INT8, on 2 CPU threads.

One run measures, side by side on the same models and inputs:

* U-Net (resnet34, random weights, 3 -> 2 classes) and FCN-8s (3 -> 21 classes) at 256, 512
  and 1024 pixels square, batch 1: median latency and achieved GFLOP/s (torch's FLOP count of
  the model, 1 MAC = 2 FLOPs; INT8 is reported as FP32-equivalent work), against the best
  2-thread fp32 matmul (sgemm) rate of this machine. ORT runs through the serving engine's
  pad/run/crop (``Engine.run_normalised``), i.e. what is served. Repetitions of the three
  contenders are interleaved so machine noise hits all of them alike.
* Latency of ``Engine.predict`` (decode excluded, tiling on) from 256^2 to 4096^2 pixels.
* Peak RSS of a fresh process segmenting an 8000x8000 image (ru_maxrss and VmHWM).

Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/engine_bench.py   # ~6 minutes

Writes bench/results/engine_bench.json and docs/latency_vs_megapixels.png, prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _cpu import cpu_info
from _paths import SHARED_DATA
from torch.utils.flop_counter import FlopCounterMode

import fcn
from service.engine import Engine, EngineConfig
from training.export.onnx import export_model
from training.export.quantize import calibration_images, quantize_int8

THREADS = 2
ROOT = Path(__file__).resolve().parents[1]
ISBI = SHARED_DATA / "isbi2012_em_membrane"
MODELS = {"unet": ({"encoder": "resnet34"}, 2), "fcn8s": ({}, 21)}  # options, classes
SIZES = {256: 6, 512: 5, 1024: 2}  # side -> interleaved repetitions after a warm-up
SWEEP = {256: 5, 512: 3, 1024: 2, 2048: 1, 4096: 1}  # side -> repetitions
RSS_SIDE = 8000


def matmul_peak(reps: int = 5) -> dict[str, float]:
    """Best median GFLOP/s of 2-thread fp32 square matmuls (numpy/OpenBLAS and torch/MKL)."""
    rates: dict[str, float] = {}
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        an, bn = a.numpy(), b.numpy()
        for lib, fn in (
            ("torch", lambda a=a, b=b: a @ b),
            ("numpy", lambda an=an, bn=bn: an @ bn),
        ):
            fn()
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            rates[f"{lib}_{n}"] = 2 * n**3 / statistics.median(times) / 1e9
    rates["peak"] = max(rates.values())
    return rates


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (also serves as torch's warm-up run)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops()


def interleaved(
    contenders: dict[str, Callable[[], object]], reps: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time each contender ``reps`` times, rotating the order every round.

    Returns:
        Wall seconds per run, and per contender the median ratio of process CPU time to wall
        time: about ``THREADS`` on a quiet machine, lower when other processes took the cores.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up: first-run allocations, ORT's kernel selection
        contenders[name]()
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            time.sleep(0.02)  # let the other runtime's worker threads go idle first
            start, start_cpu = time.perf_counter(), time.process_time()
            contenders[name]()
            wall = time.perf_counter() - start
            times[name].append(wall)
            cpu[name].append((time.process_time() - start_cpu) / wall)
    return times, {n: statistics.median(v) for n, v in cpu.items()}


def prepare(name: str, work: Path, images: list[Path], log: Callable[[str], None]) -> dict:
    """Build a random-weight model, export it (parity-checked) and quantize it."""
    options, classes = MODELS[name]
    torch.manual_seed(0)
    model = fcn.build_model(name, num_classes=classes, in_channels=3, **options).eval()
    with torch.no_grad():  # FCN score layers start at zero; random weights everywhere instead
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.01)
    config = {
        "model": {"arch": name, "num_classes": classes, "in_channels": 3, "options": options},
        "data": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    fp32 = export_model(model, config, work / f"{name}.onnx", parity_sizes=((97, 130),)).path
    log(f"{name}: exported {fp32.stat().st_size / 1e6:.0f} MB")
    int8 = quantize_int8(fp32, work / f"{name}.int8.onnx", images, check_images=1).path
    log(f"{name}: quantized {int8.stat().st_size / 1e6:.0f} MB")
    config = EngineConfig(intra_op_threads=THREADS, inter_op_threads=1)
    return {
        "model": model,
        "fp32": Engine.load(fp32, config),
        "int8": Engine.load(int8, config),
        "paths": {"fp32": str(fp32), "int8": str(int8)},
    }


def bench_model(name: str, setup: dict, sizes: dict[int, int], peak: float) -> list[dict]:
    rows = []
    model, fp32, int8 = setup["model"], setup["fp32"], setup["int8"]
    for side, reps in sizes.items():
        x = torch.randn(1, 3, side, side)
        flops = count_flops(model, x)
        xn = x.numpy()

        def eager(x: torch.Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        times, cpu = interleaved(
            {
                "torch eager": eager,
                "ORT FP32": lambda xn=xn: fp32.run_normalised(xn),
                "ORT INT8": lambda xn=xn: int8.run_normalised(xn),
            },
            reps,
        )
        for contender, samples in times.items():
            median = statistics.median(samples)
            rows.append(
                {
                    "model": name,
                    "size": side,
                    "contender": contender,
                    "gflop": flops / 1e9,
                    "median_ms": 1e3 * median,
                    "min_ms": 1e3 * min(samples),
                    "samples_ms": [round(1e3 * s, 1) for s in samples],
                    "cpu_per_wall": cpu[contender],
                    "gflops_per_s": flops / median / 1e9,
                    "fraction_of_peak": flops / median / 1e9 / peak,
                }
            )
    return rows


def latency_sweep(engines: dict[str, Engine], sweep: dict[int, int]) -> list[dict]:
    """``Engine.predict`` on uint8 RGB images of growing size (tiled above 1024^2)."""
    rows = []
    rng = np.random.default_rng(0)
    for side, reps in sweep.items():
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        for label, engine in engines.items():
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                engine.predict(pixels)
                times.append(time.perf_counter() - start)
            rows.append(
                {
                    "engine": label,
                    "side": side,
                    "megapixels": side * side / 1e6,
                    "tiled": engine.uses_tiling(side, side),
                    "median_s": statistics.median(times),
                }
            )
    return rows


_RSS_CHILD = """
import resource, sys, time
from service.engine import Engine, EngineConfig
engine = Engine.load(sys.argv[1], EngineConfig(intra_op_threads=2, inter_op_threads=1))
start = time.perf_counter()
mask = engine.predict(engine.decode(sys.argv[2]))
seconds = time.perf_counter() - start
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(mask.shape[0], mask.shape[1], seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm)
"""


def peak_rss(model: str, work: Path, side: int) -> dict:
    """Segment a ``side`` x ``side`` PNG in a fresh process; its peak resident memory."""
    from PIL import Image

    texture = (
        np.asarray(Image.open(ISBI / "images" / "0.png").convert("RGB"))
        if ISBI.is_dir()
        else np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    )
    reps = -(-side // texture.shape[0])
    image = np.tile(texture, (reps, reps, 1))[:side, :side]
    path = work / f"big_{side}.png"
    Image.fromarray(image).save(path, compress_level=1)
    del image
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, model, str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    h, w, seconds, maxrss_kb, hwm_kb = (
        int(out[0]),
        int(out[1]),
        float(out[2]),
        int(out[3]),
        int(out[4]),
    )
    # VmHWM is the child's own peak. Its ru_maxrss can include the parent's resident size at
    # fork time (Linux carries the high-water mark over until exec), so it is kept as a note.
    return {
        "side": side,
        "mask_shape": [h, w],
        "seconds": seconds,
        "model": Path(model).name,
        "vmhwm_mb": hwm_kb / 1024,
        "ru_maxrss_mb": maxrss_kb / 1024,
    }


def plot(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r["engine"] for r in sweep):
        pts = [r for r in sweep if r["engine"] == label]
        ax.plot([p["megapixels"] for p in pts], [p["median_s"] for p in pts], "o-", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="image size (megapixels)",
        ylabel="latency (s)",
        title="Engine.predict, U-Net resnet34, 2 threads (tiled > 1 MP)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def print_table(rows: list[dict], peak: float) -> None:
    print(
        f"\n{'model':6} {'size':>5} {'contender':12} {'GFLOP':>7} {'median ms':>10} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'vs eager':>9} {'cpu/wall':>8}"
    )
    for r in rows:
        eager = next(
            e
            for e in rows
            if e["model"] == r["model"]
            and e["size"] == r["size"]
            and e["contender"] == "torch eager"
        )
        print(
            f"{r['model']:6} {r['size']:5d} {r['contender']:12} {r['gflop']:7.1f} "
            f"{r['median_ms']:10.1f} {r['gflops_per_s']:8.1f} {100 * r['fraction_of_peak']:6.0f}% "
            f"{eager['median_ms'] / r['median_ms']:8.2f}x {r['cpu_per_wall']:8.2f}"
        )
    print(
        f"fp32 matmul peak (2 threads): {peak:.0f} GFLOP/s; cpu/wall near {THREADS} = "
        "undisturbed, lower = other processes shared the cores"
    )


def check_targets(rows: list[dict], rss: dict | None) -> dict[str, dict]:
    def ms(model: str, contender: str) -> float:
        return next(
            r["median_ms"]
            for r in rows
            if r["model"] == model and r["size"] == 512 and r["contender"] == contender
        )

    targets = {}
    for model in MODELS:
        ratio = ms(model, "torch eager") / ms(model, "ORT FP32")
        targets[f"{model} ORT FP32 >= 1.2x torch eager @512"] = {
            "value": ratio,
            "met": ratio >= 1.2,
        }
        ratio = ms(model, "ORT FP32") / ms(model, "ORT INT8")
        targets[f"{model} ORT INT8 >= 2x ORT FP32 @512"] = {"value": ratio, "met": ratio >= 2.0}
    frac = next(
        r["fraction_of_peak"]
        for r in rows
        if r["model"] == "unet" and r["size"] == 512 and r["contender"] == "ORT FP32"
    )
    targets["unet ORT FP32 >= 75% of matmul peak @512"] = {"value": frac, "met": frac >= 0.75}
    if rss is not None:
        gb = rss["vmhwm_mb"] / 1024
        targets[f"{RSS_SIDE}x{RSS_SIDE} peak RSS <= 2.5 GB"] = {"value": gb, "met": gb <= 2.5}
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes/reps, no RSS run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/engine_bench.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs/latency_vs_megapixels.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    sizes = {256: 2, 512: 2} if args.quick else SIZES
    sweep_sizes = {256: 1, 1024: 1, 2048: 1} if args.quick else SWEEP
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f}s] {text}", flush=True)

    peak = matmul_peak()
    log(
        f"matmul peak {peak['peak']:.0f} GFLOP/s ({', '.join(f'{k} {v:.0f}' for k, v in peak.items())})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = ISBI if ISBI.is_dir() else None
        if src is None:
            from training.data.demo import write_demo

            src = write_demo(work / "demo", count=12, size=512, seed=0)
        images = calibration_images(src, limit=8)
        rows, setups = [], {}
        for name in MODELS:
            setups[name] = prepare(name, work, images[: 8 if name == "unet" else 4], log)
            rows += bench_model(name, setups[name], sizes, peak["peak"])
            log(f"{name}: timed")
            if name != "unet":
                del setups[name]  # FCN-8s holds ~2 GB of weights across torch and two sessions
        unet = setups["unet"]
        sweep = latency_sweep({"ORT FP32": unet["fp32"], "ORT INT8": unet["int8"]}, sweep_sizes)
        log("latency sweep done")
        rss = None if args.quick else peak_rss(unet["paths"]["int8"], work, RSS_SIDE)
        if rss:
            log(f"{RSS_SIDE}^2: peak RSS {rss['vmhwm_mb']:.0f} MB in {rss['seconds']:.0f}s")
    # Once more at the end: the best of both is the machine's rate when it was least shared.
    again = matmul_peak()
    peak = {k: max(v, again[k]) for k, v in peak.items()}
    for r in rows:
        r["fraction_of_peak"] = r["gflops_per_s"] / peak["peak"]
    print_table(rows, peak["peak"])
    targets = check_targets(rows, rss)
    for label, t in targets.items():
        print(f"{'MET ' if t['met'] else 'MISS'} {label}: {t['value']:.2f}")
    result = {
        "cpu": cpu_info(),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": THREADS,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "loadavg_at_end": os.getloadavg(),
        },
        "matmul_gflops": peak,
        "latency": rows,
        "sweep": sweep,
        "rss": rss,
        "targets": targets,
        "quick": args.quick,
        "seconds": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(sweep, args.plot)
    log(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
