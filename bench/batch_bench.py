"""Batch throughput: ``fcn predict`` against the limit, the old loop and a hand-written loop.

One run, on a generated folder of 512x512 JPEGs (default 200), for two models — the bundled
default model (``service/assets/default.onnx``; a U-Net/MobileNetV2 stand-in with random
weights when this checkout lacks it) and a U-Net-ResNet34 with random weights exported by
``training.export.onnx`` — images/s of:

1. ``bare``: a loop of ``session.run`` on pre-decoded, pre-normalised arrays (the limit);
2. ``fcn predict``: the real command in a subprocess, index PNGs out; its own images/s line
   (the run, without interpreter start and model load), plus wall time and peak RSS;
3. ``sequential``: the loop ``service/batch.py`` was at main 8aa8930 (decode, predict, encode,
   write, one image after another), re-implemented inline below;
4. ``torch``: what a user writes by hand: PIL open, torch eager under ``no_grad``, argmax, PIL
   save.

Then peak RSS of ``fcn predict`` with the default model on the same folder grown to 2,000
images (the 200 files copied ten times into sub-folders). Every loop writes index PNGs.

Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/batch_bench.py   # ~10 minutes

Writes bench/results/batch_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

import fcn
from service import pipeline
from service.engine import Engine
from training.export.onnx import export_model

ROOT = Path(__file__).resolve().parents[1]
SIDE = 512
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
STAND_IN = ("unet", {"encoder": "mobilenet_v2"}, 5)  # arch, options, classes


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_folder(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 512x512 JPEGs: smooth colour regions plus fine noise (photo-like sizes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((SIDE, SIDE), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def grow_folder(source: Path, target: Path, copies: int) -> None:
    for c in range(copies):
        shutil.copytree(source, target / f"copy{c:02d}")


def export(work: Path, name: str, arch: str, options: dict, classes: int) -> Path:
    model = fcn.build_model(arch, num_classes=classes, in_channels=3, **options).eval()
    config = {
        "model": {"arch": arch, "num_classes": classes, "in_channels": 3, "options": options},
        "data": {"mean": MEAN, "std": STD},
    }
    return export_model(model, config, work / f"{name}.onnx", parity_sizes=((97, 130),)).path


def torch_model(engine: Engine) -> torch.nn.Module:
    """The same architecture in torch eager (random weights: speed does not depend on them)."""
    meta = engine.metadata
    options = dict(meta.options)
    options.pop("encoder_weights", None)
    return fcn.build_model(meta.arch, num_classes=meta.num_classes, in_channels=3, **options).eval()


# --- the four loops -------------------------------------------------------------------------


def bare_loop(model: Path, paths: list[Path]) -> float:
    engine = Engine.load(model)
    arrays = [engine.normalise(engine.decode(p))[None] for p in paths]
    session, name = engine.session, engine.input_name
    session.run(None, {name: arrays[0]})  # warm-up
    start = time.perf_counter()
    for x in arrays:
        session.run(None, {name: x})
    return len(arrays) / (time.perf_counter() - start)


# Runs ``fcn predict`` in a fresh interpreter and reports its own peak RSS: VmHWM belongs to
# the process's memory map. (ru_maxrss from wait4 does not: Linux carries the parent's peak
# over the fork/exec, so a child of this big benchmark process would report the parent's.)
_CHILD = """
import sys
from fcn.cli import main
code = main(sys.argv[1:])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(f"VmHWM {hwm}", flush=True)
sys.exit(code)
"""


def fcn_predict(model: Path, folder: Path, out: Path) -> dict:
    """Run the real command; its images/s line, wall time and peak RSS (VmHWM)."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-c", _CHILD, "predict", str(model), str(folder), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fcn predict failed ({done.returncode}): {done.stdout}")
    match = re.search(r"(\d+) ok.*?([\d.]+) images/s", done.stdout)
    hwm = re.search(r"VmHWM (\d+)", done.stdout)
    return {
        "images": int(match.group(1)),
        "images_per_s": float(match.group(2)),
        "wall_s": wall,
        "wall_images_per_s": int(match.group(1)) / wall,
        "peak_rss_mb": int(hwm.group(1)) / 1024,
    }


def sequential_loop(model: Path, paths: list[Path], out: Path) -> float:
    """The runner as it was at 8aa8930: one image after another, plain writes."""
    engine = Engine.load(model)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in paths:
        segmentation = pipeline.segment(engine, path)
        data = pipeline.encode(engine, segmentation, "index", alpha=0.5, info={})
        (out / f"{path.stem}_mask.png").write_bytes(data)
    return len(paths) / (time.perf_counter() - start)


def torch_loop(net: torch.nn.Module, paths: list[Path], out: Path) -> float:
    """What a user writes by hand: PIL in, torch eager, PIL out."""
    out.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        net(torch.zeros(1, 3, SIDE, SIDE))  # warm-up
        start = time.perf_counter()
        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            logits = net((x - mean) / std)
            mask = logits.argmax(1)[0].to(torch.uint8).numpy()
            Image.fromarray(mask).save(out / f"{path.stem}_mask.png")
    return len(paths) / (time.perf_counter() - start)


# --- the run ----------------------------------------------------------------------------------


def bench_model(name: str, model: Path, folder: Path, paths: list[Path], work: Path) -> dict:
    engine = Engine.load(model)
    options = json.loads(engine.session.get_modelmeta().custom_metadata_map.get("options", "{}"))
    row: dict = {"model": name, "arch": engine.metadata.arch, "options": options}
    row["file"], row["megabytes"] = str(model), model.stat().st_size / 1e6
    log(f"{name}: bare loop")
    row["bare"] = bare_loop(model, paths)
    log(f"{name}: fcn predict")
    row["predict"] = fcn_predict(model, folder, work / "out_predict")
    log(f"{name}: sequential loop")
    row["sequential"] = sequential_loop(model, paths, work / "out_seq")
    log(f"{name}: torch eager loop")
    row["torch"] = torch_loop(torch_model(engine), paths, work / "out_torch")
    rate = row["predict"]["images_per_s"]
    row["predict_vs_bare"] = rate / row["bare"]
    row["predict_vs_sequential"] = rate / row["sequential"]
    row["predict_vs_torch"] = rate / row["torch"]
    log(f"{name}: {json.dumps(row)}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rss-images", type=int, default=2000, help="the larger RSS folder")
    parser.add_argument("--default", type=Path, default=ROOT / "service/assets/default.onnx")
    parser.add_argument("--no-unet", action="store_true", help="default model only (quick)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/batch_bench.json")
    args = parser.parse_args()
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="batch_bench_"))
    try:
        folder = work / "images"
        paths = make_folder(folder, args.images)
        log(f"{len(paths)} JPEGs, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB")
        models = {}
        if args.default.is_file():
            models["default"] = args.default
        else:
            arch, options, classes = STAND_IN
            log(f"no {args.default}: exporting a stand-in {arch}/{options['encoder']}")
            models["default (stand-in)"] = export(work, "default", arch, options, classes)
        if not args.no_unet:
            models["unet-r34"] = export(work, "unet_r34", "unet", {"encoder": "resnet34"}, 2)
        rows = [bench_model(name, path, folder, paths, work) for name, path in models.items()]

        copies = -(-args.rss_images // args.images)
        big = work / "images_big"
        grow_folder(folder, big, copies)
        first = next(iter(models.values()))
        log(f"fcn predict on {copies * args.images} images (RSS)")
        small_run = rows[0]["predict"]
        big_run = fcn_predict(first, big, work / "out_big")
        rss = {
            "model": rows[0]["model"],
            "small": {"images": args.images, **small_run},
            "large": {"images": copies * args.images, **big_run},
            "ratio": big_run["peak_rss_mb"] / small_run["peak_rss_mb"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
        "images": args.images,
        "side": SIDE,
        "rows": rows,
        "rss": rss,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"\n{result['images']} JPEGs of {result['side']}x{result['side']}, images/s:\n")
    print(
        "| model | bare session.run | fcn predict | sequential (8aa8930) | PIL + torch eager "
        "| predict / bare | predict / torch | predict / sequential |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["rows"]:
        p = r["predict"]
        print(
            f"| {r['model']} | {r['bare']:.2f} | {p['images_per_s']:.2f} "
            f"({p['wall_images_per_s']:.2f} with start-up) | {r['sequential']:.2f} "
            f"| {r['torch']:.2f} | {r['predict_vs_bare']:.2f}x | {r['predict_vs_torch']:.2f}x "
            f"| {r['predict_vs_sequential']:.2f}x |"
        )
    rss = result["rss"]
    print(
        f"\nfcn predict peak RSS ({rss['model']}): {rss['small']['images']} images "
        f"{rss['small']['peak_rss_mb']:.0f} MB, {rss['large']['images']} images "
        f"{rss['large']['peak_rss_mb']:.0f} MB ({rss['ratio']:.3f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
