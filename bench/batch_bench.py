"""Batch throughput: ``fcn predict`` against the limit, the old loop and a hand-written loop.

One run, on a generated folder of 512x512 JPEGs (default 200), for two models:

* ``default``: the bundled model (``service/assets/default.onnx``, whatever this checkout ships;
  a U-Net/MobileNetV2 stand-in with random weights when it lacks one), served at the precision
  ``auto`` picks for that file (saved results: the model bundled when they were measured);
* ``unet-r34``: a U-Net/ResNet34 trained on ISBI 2012 the way a user makes one — ``fcn train``
  (``--unet-checkpoint`` reuses a run, else a short one is trained here), then ``fcn export
  --quantize int8 --calibration-data ISBI``, which records the precision checks ``--precision
  auto`` reads. It gets two rows: ``fcn predict``'s defaults (auto: the fastest path whose
  recorded mIoU loss is <= 0.5 point) and ``--precision fp32`` (ONNX Runtime fp32).

images/s of:

1. ``bare``: a loop of one ``run`` per image on pre-decoded, pre-normalised, pre-padded arrays
   (the limit), on the same runtime, precision and session options as the ``fcn predict``
   of its row (``Engine.load(...).backend``; ONNX Runtime: ``session.run``), threads left at
   the runtime's default;
2. ``fcn predict``: the real command in a subprocess, index PNGs out; its own images/s line
   (the run, without interpreter start and model load), plus wall time and peak RSS; the
   runtime/precision it served is read from its log and must equal the bare loop's;
3. ``sequential``: the loop ``service/batch/runner.py`` was at main 8aa8930 (decode, predict, encode,
   write, one image after another), re-implemented inline below, on the row's precision;
4. ``torch``: what a user writes by hand: PIL open, torch eager under ``no_grad``, argmax, PIL
   save (the checkpoint's weights for the U-Net; random weights for the default model).

Then peak RSS of ``fcn predict`` with the default model on the same folder grown to 2,000
images (the 200 files copied ten times into sub-folders). Every loop writes index PNGs.

Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/batch_bench.py \
        --unet-checkpoint RUN/best.pt        # ~10 minutes; without it a 2-minute training first

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _cpu import cpu_info
from _paths import SHARED_DATA, shown
from PIL import Image

import fcn
from service import pipeline
from service.engine import Engine, EngineConfig, pad_to_multiple
from service.engine.config import BATCH_MEMORY_ARENA
from training.export.onnx import export_model

ROOT = Path(__file__).resolve().parents[1]
ISBI = SHARED_DATA / "isbi2012_em_membrane"
SIDE = 512
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
STAND_IN = ("unet", {"encoder": "mobilenet_v2"}, 5)  # arch, options, classes
# What `fcn predict` gives the runtime (besides its threads): the bare loop uses the same.
PREDICT_CONFIG = {"memory_arena": BATCH_MEMORY_ARENA}


@dataclass(frozen=True)
class Case:
    """One table row: a model file served at one precision setting."""

    name: str
    model: Path
    precision: str  # "auto" (fcn predict's default) or an explicit one
    torch_key: str  # which torch loop is its hand-written comparison


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


def fcn_cli(*args: str) -> float:
    """Run ``fcn ARGS`` as a user does (a subprocess); its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fcn", *args], check=True)
    return time.perf_counter() - start


def trained_unet(work: Path, checkpoint: Path | None, data: Path, minutes: float) -> dict:
    """A U-Net-r34 the way a user gets one: ``fcn train`` (unless given), ``fcn export``."""
    info: dict = {"data": shown(data)}
    if checkpoint is None:
        run = work / "unet_run"
        log(f"training a U-Net-r34 on {data} for {minutes} min")
        train = ["train", "--data", str(data), "--mask-values", "0,255", "--arch", "unet"]
        train += ["--encoder", "resnet34", "--max-minutes", str(minutes), "--workers", "0"]
        info["train_s"] = fcn_cli(*train, "--no-plots", "--out", str(run))
        checkpoint = run / "best.pt"
    info["checkpoint"] = shown(checkpoint)  # as the results record it
    info["checkpoint_path"] = checkpoint  # to load (dropped before writing)
    model = work / "unet_r34.onnx"
    log(f"fcn export --quantize int8 (precision checks on {data})")
    exporting = ["export", "--checkpoint", str(checkpoint), "--out", str(model)]
    exporting += ["--quantize", "int8", "--calibration-data", str(data)]
    info["export_s"] = fcn_cli(*exporting)
    engine = Engine.load(model, EngineConfig(precision="fp32"))
    info["best_metric"] = json.loads(engine.metadata_props.get("best_metric", "null"))
    checks = engine.metadata.precision_checks
    info["precision_checks"] = (
        checks | {"data": shown(checks["data"])} if checks and checks.get("data") else checks
    )
    info["model"] = model
    return info


def torch_net(model: Path, checkpoint: Path | None) -> tuple[torch.nn.Module, Engine]:
    """The same network in torch eager: the checkpoint's weights, else random ones."""
    # read for its metadata; "auto" loads an INT8-only file too (the bundled default)
    engine = Engine.load(model, EngineConfig(precision="auto"))
    if checkpoint is not None:
        from training.checkpoint import load_checkpoint, model_from_checkpoint

        return model_from_checkpoint(load_checkpoint(checkpoint)).eval(), engine
    meta = engine.metadata
    options = dict(meta.options)
    options.pop("encoder_weights", None)
    net = fcn.build_model(meta.arch, num_classes=meta.num_classes, in_channels=3, **options)
    return net.eval(), engine


# --- the four loops -------------------------------------------------------------------------


def load(case: Case, served: str | None = None) -> Engine:
    """The engine ``fcn predict`` builds for this row (threads aside).

    ``served`` ("backend precision", what ``fcn predict`` logged) pins the path: ``auto``
    times its candidates on load, and two loads may pick differently when two paths are
    about as fast, so the loops compared with ``fcn predict`` run the path it served.
    """
    if served is None:
        return Engine.load(case.model, EngineConfig(precision=case.precision, **PREDICT_CONFIG))
    backend, precision = served.split()
    config = EngineConfig(backend=backend, precision=precision, **PREDICT_CONFIG)
    return Engine.load(case.model, config)


def bare_loop(engine: Engine, paths: list[Path]) -> float:
    """One ``run`` per image on arrays decoded, normalised and padded beforehand."""
    multiple = engine.metadata.size_multiple
    arrays = [pad_to_multiple(engine.normalise(engine.decode(p))[None], multiple) for p in paths]
    run = engine.backend.run
    run(arrays[0])  # warm-up
    start = time.perf_counter()
    for x in arrays:
        run(x)
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


def fcn_predict(model: Path, folder: Path, out: Path, *options: str) -> dict:
    """Run the real command; its images/s line, wall time, peak RSS and the path it served."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-c", _CHILD, "predict", str(model), str(folder), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run([*argv, *options], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"fcn predict failed ({done.returncode}): {done.stdout}{done.stderr}")
    match = re.search(r"(\d+) ok.*?([\d.]+) images/s", done.stdout)
    hwm = re.search(r"VmHWM (\d+)", done.stdout)
    served = re.search(r"with (\w+) (\w+) on ", done.stderr)
    return {
        "options": list(options),
        "served": f"{served.group(1)} {served.group(2)}" if served else None,
        "images": int(match.group(1)),
        "images_per_s": float(match.group(2)),
        "wall_s": wall,
        "wall_images_per_s": int(match.group(1)) / wall,
        "peak_rss_mb": int(hwm.group(1)) / 1024,
    }


def sequential_loop(case: Case, served: str, paths: list[Path], out: Path) -> float:
    """The runner as it was at 8aa8930: one image after another, plain writes."""
    backend, precision = served.split()
    engine = Engine.load(case.model, EngineConfig(backend=backend, precision=precision))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in paths:
        segmentation = pipeline.segment(engine, path)
        data = pipeline.encode(engine, segmentation, "index", alpha=0.5, info={})
        (out / f"{path.stem}_mask.png").write_bytes(data)
    return len(paths) / (time.perf_counter() - start)


def torch_loop(net: torch.nn.Module, engine: Engine, paths: list[Path], out: Path) -> float:
    """What a user writes by hand: PIL in, torch eager, PIL out."""
    out.mkdir(parents=True, exist_ok=True)
    meta = engine.metadata
    mode = {1: "L", 3: "RGB"}[meta.in_channels]
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    with torch.no_grad():
        net(torch.zeros(1, meta.in_channels, SIDE, SIDE))  # warm-up
        start = time.perf_counter()
        for path in paths:
            image = np.array(Image.open(path).convert(mode)).reshape(SIDE, SIDE, -1)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            logits = net((x - mean) / std)
            mask = logits.argmax(1)[0].to(torch.uint8).numpy()
            Image.fromarray(mask).save(out / f"{path.stem}_mask.png")
    return len(paths) / (time.perf_counter() - start)


# --- the run ----------------------------------------------------------------------------------


def bench_case(case: Case, folder: Path, paths: list[Path], work: Path, torch_rate: float) -> dict:
    log(f"{case.name}: fcn predict --precision {case.precision}")
    predicted = fcn_predict(case.model, folder, work / "out_predict", "--precision", case.precision)
    served = predicted["served"]
    if served is None:
        raise RuntimeError("fcn predict did not log the path it served")
    chosen = load(case)  # what this precision setting picks, and why (auto: timed on load)
    options = json.loads(chosen.metadata_props.get("options", "{}"))
    row: dict = {"model": case.name, "arch": chosen.metadata.arch, "options": options}
    row["file"], row["megabytes"] = shown(case.model), case.model.stat().st_size / 1e6
    row["precision_option"], row["served"] = case.precision, served
    row["choice"] = chosen.choice.reason if chosen.choice else None
    # auto's pick on this second load; the loops below run the path fcn predict served
    row["picked_on_reload"] = f"{chosen.backend_name} {chosen.precision}"
    del chosen
    engine = load(case, served)
    log(f"{case.name}: bare loop ({served})")
    row["bare"] = bare_loop(engine, paths)
    del engine
    row["predict"] = predicted
    log(f"{case.name}: sequential loop")
    row["sequential"] = sequential_loop(case, served, paths, work / "out_seq")
    row["torch"] = torch_rate
    rate = row["predict"]["images_per_s"]
    row["predict_vs_bare"] = rate / row["bare"]
    row["predict_vs_sequential"] = rate / row["sequential"]
    row["predict_vs_torch"] = rate / row["torch"]
    log(f"{case.name}: {json.dumps(row)}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rss-images", type=int, default=2000, help="the larger RSS folder")
    parser.add_argument("--default", type=Path, default=ROOT / "service/assets/default.onnx")
    parser.add_argument("--no-unet", action="store_true", help="default model only (quick)")
    parser.add_argument(
        "--unet-checkpoint", type=Path, help="a U-Net-r34 `fcn train` run's best.pt (else train)"
    )
    parser.add_argument("--train-minutes", type=float, default=2.0)
    parser.add_argument("--data", type=Path, default=ISBI, help="training/calibration data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/batch_bench.json")
    args = parser.parse_args()
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="batch_bench_"))
    unet: dict | None = None
    try:
        folder = work / "images"
        paths = make_folder(folder, args.images)
        log(f"{len(paths)} JPEGs, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB")
        if args.default.is_file():
            default_name, default_model = "default", args.default
        else:
            arch, options, classes = STAND_IN
            log(f"no {args.default}: exporting a stand-in {arch}/{options['encoder']}")
            default_name = "default (stand-in)"
            default_model = export(work, "default", arch, options, classes)
        cases = [Case(default_name, default_model, "auto", "default")]
        nets = {"default": (default_model, None)}
        if not args.no_unet:
            unet = trained_unet(work, args.unet_checkpoint, args.data, args.train_minutes)
            nets["unet"] = (unet["model"], Path(unet.pop("checkpoint_path")))
            cases += [
                Case("unet-r34", unet["model"], "auto", "unet"),
                Case("unet-r34", unet["model"], "fp32", "unet"),
            ]
        torch_rates = {}
        for key, (model, checkpoint) in nets.items():
            log(f"{key}: torch eager loop")
            net, engine = torch_net(model, checkpoint)
            torch_rates[key] = torch_loop(net, engine, paths, work / "out_torch")
            del net, engine
        rows = [
            bench_case(case, folder, paths, work, torch_rates[case.torch_key]) for case in cases
        ]

        copies = -(-args.rss_images // args.images)
        big = work / "images_big"
        grow_folder(folder, big, copies)
        log(f"fcn predict on {copies * args.images} images (RSS)")
        small_run = rows[0]["predict"]
        big_run = fcn_predict(default_model, big, work / "out_big", "--precision", "auto")
        rss = {
            "model": rows[0]["model"],
            "small": {"images": args.images, **small_run},
            "large": {"images": copies * args.images, **big_run},
            "ratio": big_run["peak_rss_mb"] / small_run["peak_rss_mb"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if unet is not None:
        unet["model"] = unet["model"].name
    result = {
        "cpu": cpu_info(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
        },
        "images": args.images,
        "side": SIDE,
        "predict_config": PREDICT_CONFIG,
        "unet": unet,
        "rows": rows,
        "rss": rss,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"\n{result['images']} JPEGs of {result['side']}x{result['side']}, images/s:\n")
    print(
        "| model | precision (served) | bare run loop | fcn predict | sequential (8aa8930) "
        "| PIL + torch eager | predict / bare | predict / torch | predict / sequential |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["rows"]:
        p = r["predict"]
        print(
            f"| {r['model']} | {r['precision_option']} ({r['served']}) | {r['bare']:.2f} "
            f"| {p['images_per_s']:.2f} ({p['wall_images_per_s']:.2f} with start-up) "
            f"| {r['sequential']:.2f} | {r['torch']:.2f} | {r['predict_vs_bare']:.2f}x "
            f"| {r['predict_vs_torch']:.2f}x | {r['predict_vs_sequential']:.2f}x |"
        )
    rss = result["rss"]
    print(
        f"\nfcn predict peak RSS ({rss['model']}): {rss['small']['images']} images "
        f"{rss['small']['peak_rss_mb']:.0f} MB, {rss['large']['images']} images "
        f"{rss['large']['peak_rss_mb']:.0f} MB ({rss['ratio']:.3f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
