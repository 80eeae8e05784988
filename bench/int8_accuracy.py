"""INT8 accuracy and speed on a trained model: mIoU lost and speed-up per calibration recipe.

Exports a checkpoint to FP32 ONNX, then quantizes it once per recipe (calibration method x
classifier head in FP32 or INT8), calibrating on the training split only, and for each:

* mIoU on the validation split through the serving engine (``training.evaluate.evaluate_onnx``,
  what ``fcn evaluate --model`` runs), against the FP32 export;
* median latency at 512x512 (2 threads), FP32 and INT8 interleaved.

Run it alone (the machine is shared)::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/int8_accuracy.py \\
        --checkpoint runs/isbi-unet-r18/best.pt

Writes bench/results/int8_accuracy.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _cpu import cpu_info

from service.engine import Engine, EngineConfig
from training.checkpoint import load_checkpoint
from training.evaluate import evaluate_onnx
from training.export.onnx import export_checkpoint
from training.export.quantize import calibration_images, quantize_int8

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [(m, head) for m in ("minmax", "percentile", "entropy") for head in (False, True)]


def latency(paths: dict[str, Path], side: int, reps: int) -> dict[str, float]:
    """Median ms of ``run_normalised`` at ``side``x``side``, contenders interleaved."""
    config = EngineConfig(intra_op_threads=2, inter_op_threads=1)
    engines = {k: Engine.load(p, config) for k, p in paths.items()}
    channels = next(iter(engines.values())).metadata.in_channels
    x = np.random.default_rng(0).standard_normal((1, channels, side, side), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for engine in engines.values():
        engine.run_normalised(x)
    for _ in range(reps):
        for name, engine in engines.items():
            time.sleep(0.02)
            start = time.perf_counter()
            engine.run_normalised(x)
            times[name].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "runs/isbi-unet-r18/best.pt")
    parser.add_argument("--data", type=Path, help="dataset (default: the checkpoint's)")
    parser.add_argument("--calibration-limit", type=int, default=32)
    parser.add_argument("--reps", type=int, default=8, help="latency repetitions")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/int8_accuracy.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_cfg = load_checkpoint(args.checkpoint).config.get("data") or {}
    root = str(args.data or data_cfg["root"])
    split = {k: data_cfg[k] for k in ("layout", "val_fraction", "seed") if k in data_cfg}
    images = calibration_images(root, limit=args.calibration_limit, **split)
    print(f"calibrating on {len(images)} training images of {root} ({split})")

    def miou(path: Path) -> float:
        return evaluate_onnx(path, root=root, split="val", checkpoint=args.checkpoint).metrics.miou

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_checkpoint(args.checkpoint, Path(tmp) / "fp32.onnx").path
        base = miou(fp32)
        print(f"FP32 mIoU {100 * base:.2f}")
        for method, head in RECIPES:
            out = Path(tmp) / f"{method}{'_head' if head else ''}.int8.onnx"
            q = quantize_int8(fp32, out, images, method=method, exclude_head=head)
            score = miou(out)
            ms = latency({"fp32": fp32, "int8": out}, 512, args.reps)
            rows.append(
                {
                    "method": method,
                    "fp32_head": head,
                    "miou": score,
                    "miou_drop_points": 100 * (base - score),
                    "fp32_agreement": q.agreement,
                    "fp32_ms": ms["fp32"],
                    "int8_ms": ms["int8"],
                    "speedup": ms["fp32"] / ms["int8"],
                    "quantize_s": q.seconds,
                }
            )
            r = rows[-1]
            print(
                f"{method:10} head {'FP32' if head else 'INT8'}: mIoU {100 * score:.2f} "
                f"(drop {r['miou_drop_points']:+.2f} points), {r['int8_ms']:.0f} ms vs "
                f"{r['fp32_ms']:.0f} ms FP32 = {r['speedup']:.2f}x",
                flush=True,
            )
    result = {
        "cpu": cpu_info(),
        "checkpoint": str(args.checkpoint),
        "data": root,
        "split": split,
        "calibration_images": len(images),
        "fp32_miou": base,
        "recipes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
