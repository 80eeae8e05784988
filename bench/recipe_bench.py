"""Claim: ``fcn train``'s defaults beat a plain smp loop in the same CPU time budget.

Issue 13's measurement. Each row trains from scratch for the same wall-clock budget on the
same split, in its own fresh process, one after another (no two runs overlap):

* ``plain``: the loop a user writes with segmentation_models_pytorch — U-Net/ResNet-18,
  AdamW 1e-3, batch 8, uniformly random 256-pixel crops, cross-entropy, float32, images
  decoded once into memory; it trains for the whole budget and is evaluated afterwards.
* ``fcn train``: ``fcn train --data D --max-minutes M`` with its defaults (validation,
  checkpoints and the final evaluation all inside the budget); its ``best.pt`` is scored.
* ablation rows: ``fcn train`` with one default changed back (``--val-share 1 --class-crop-p
  0 --lr 1e-3`` is the recipe before issue 13: validate every epoch, uniform crops, AdamW 1e-3).

Every model is then scored the same way, outside the budget: the validation images at full
size, float32, every pixel (``training.loop.epoch.evaluate``); per-class IoU and mIoU.
Training images/s counts training steps only.

Usage::

    .venv/bin/python bench/recipe_bench.py [--minutes 15] [--datasets dubai,isbi]
        [--rows plain,fcn,before,uniform-crops] [--lock /tmp/fcn-heavy.lock]

Prints a table and writes bench/results/recipe_bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cpu import cpu_info
from _paths import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA
RESULTS = Path(__file__).parent / "results" / "recipe_bench.json"

DATASETS: dict[str, dict[str, Any]] = {
    "dubai": {
        "root": SHARED / "dubai_aerial",
        "args": ["--num-classes", "6"],
        "data": {"num_classes": 6},
    },
    "isbi": {
        "root": SHARED / "isbi2012_em_membrane",
        "args": ["--mask-values", "0,255"],
        "data": {"mask_values": [0, 255]},
    },
}
# Row name -> extra ``fcn train`` arguments (None: the plain loop).
ROWS: dict[str, list[str] | None] = {
    "plain": None,
    "fcn": [],
    # The defaults as an AVX2 CPU runs them (no native bf16: float32); with
    # ONEDNN_MAX_CPU_ISA=AVX2 in the environment this approximates an AVX2 CPU on a bigger one.
    "fcn-fp32": ["--no-bf16"],
    "before": ["--val-share", "1", "--class-crop-p", "0", "--lr", "1e-3"],
    "uniform-crops": ["--class-crop-p", "0"],
    "lr-1e-3": ["--lr", "1e-3"],
    # Screened in 6-minute runs and not adopted (docs/benchmarks.md, "How the defaults were chosen"):
    "lr-4e-3": ["--lr", "4e-3"],
    "batch-4": ["--batch-size", "4"],
    "crop-384": ["--crop-size", "384", "--batch-size", "4"],
    "ema": ["--ema", "0.995"],
    "lovasz": ["--loss", "ce+lovasz"],
    "class-crop-0.8": ["--class-crop-p", "0.8"],
    # Issue 19: what costs the defaults at a few hundred steps (an AVX2 CPU's 15 minutes)
    "scale-1": ["--scale-range", "1,1"],
    "scale-0.75-1.5": ["--scale-range", "0.75,1.5"],
    "ce": ["--loss", "ce"],
    # the whole zoom range whatever the run's length: the defaults before zoom-by-length
    "zoom-always": ["--scale-range", "0.5,2"],
    # Issue 19, second screen: what else costs a run of a few hundred steps
    "val-0.03": ["--val-share", "0.03"],
    "hflip-0": ["--hflip", "0"],
    "lr-3e-3": ["--lr", "3e-3"],
    "warmup-10": ["--warmup", "10"],
    # a U-Net decoder half as wide, float32 (its speed and score: docs/benchmarks.md)
    "light-decoder-fp32": ["--no-bf16", "--model-option", "decoder_channels=[128,64,32,16,8]"],
}
ROW_TITLES = {
    "plain": "plain smp loop",
    "fcn": "fcn train (defaults)",
    "fcn-fp32": "fcn train (defaults, float32 as on AVX2)",
    "light-decoder-fp32": "fcn train, U-Net decoder 128-64-32-16-8 (float32 as on AVX2)",
    "zoom-always": "fcn train, zoom 0.5-2 at any length (the defaults before zoom-by-length)",
    "before": "fcn train, before #13 (validate every epoch, uniform crops, lr 1e-3)",
    "uniform-crops": "fcn train, uniform crops (--class-crop-p 0)",
    "lr-1e-3": "fcn train, --lr 1e-3 (the default before #13)",
}


def row_title(row: str) -> str:
    """The row's table title: its own when it needs words, else ``fcn train, <arguments>``."""
    return ROW_TITLES.get(row) or "fcn train, " + " ".join(ROWS[row] or [])


def exact_scores(model: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Full-size, float32 scores of ``model`` on the validation split of ``data``."""
    import torch

    from training.config import DataConfig
    from training.data.datasets import build_datasets
    from training.loop.distributed import DistInfo
    from training.loop.epoch import evaluate
    from training.loop.sampling import eval_loader

    _, val_ds, info = build_datasets(DataConfig(**data), split="val")
    loader = eval_loader(
        val_ds, batch_size=8, workers=0, ignore_index=info.ignore_index, info=DistInfo()
    )
    start = time.perf_counter()
    model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, info.num_classes, device=torch.device("cpu"))
    metrics = result.matrix.compute(info.classes)
    return {
        "miou": metrics.miou,
        "per_class_iou": dict(zip(info.classes, metrics.per_class_iou, strict=True)),
        "eval_seconds": time.perf_counter() - start,
    }


def plain_loop(data: dict[str, Any], minutes: float, seed: int = 0) -> dict[str, Any]:
    """The reference loop for ``minutes``; returns its numbers and exact scores."""
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch

    from training.config import DataConfig
    from training.data.datasets import build_datasets

    train_ds, _, info = build_datasets(DataConfig(**data), split="trainval")
    pairs = [train_ds.load(i) for i in range(len(train_ds))]  # decoded once, in memory
    mean = np.asarray(info.mean, dtype=np.float32) * 255
    std = np.asarray(info.std, dtype=np.float32) * 255
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = smp.Unet(
        "resnet18", encoder_weights=None, in_channels=info.in_channels, classes=info.num_classes
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=info.ignore_index)
    crop, batch = 256, 8
    model.train()
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < minutes * 60:
        xs, ys = [], []
        for _ in range(batch):
            image, mask = pairs[rng.integers(len(pairs))]
            y0 = rng.integers(0, image.shape[0] - crop + 1)
            x0 = rng.integers(0, image.shape[1] - crop + 1)
            xs.append((image[y0 : y0 + crop, x0 : x0 + crop] - mean) / std)
            ys.append(mask[y0 : y0 + crop, x0 : x0 + crop])
        x = torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32))
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "steps": steps,
        "images_per_s": steps * batch / seconds,
        "train_seconds": seconds,
        "validations": 0,
        "val_seconds": 0.0,
        **exact_scores(model, data),
    }


def fcn_train(data: dict[str, Any], args: list[str], minutes: float, out: Path) -> dict[str, Any]:
    """``fcn train`` with its defaults plus ``args``; ``best.pt`` scored exactly."""
    from fcn.cli import build_parser
    from training.checkpoint import load_checkpoint, model_from_checkpoint
    from training.commands.train import build_config
    from training.loop.train import train

    argv = ["train", "--data", str(data["root"]), "--max-minutes", str(minutes)]
    argv += ["--out", str(out), *args]
    cfg = build_config(build_parser().parse_args(argv))
    result = train(cfg)
    from training.tta import with_flip_tta

    model = model_from_checkpoint(load_checkpoint(out / "best.pt", map_location="cpu"), "cpu")
    mirrored = exact_scores(with_flip_tta(model), data)
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "images_per_s": result.images_per_s,
        "elapsed_seconds": result.elapsed_s,
        "validations": result.validations,
        "val_seconds": result.val_seconds,
        "val_share": result.val_seconds / result.elapsed_s if result.elapsed_s else 0.0,
        "best_epoch_miou_during_training": result.best_miou,
        **exact_scores(model, data),
        # The same checkpoint scored with flip test-time augmentation (--tta hflip).
        "tta_hflip": {key: mirrored[key] for key in ("miou", "per_class_iou")},
    }


def run_one(dataset: str, row: str, minutes: float, out: Path, lock: Path | None) -> dict[str, Any]:
    """Run one row in a fresh process (so no run inherits another's memory or threads),
    holding ``lock`` (``flock``) while it runs when given."""
    result = out / f"{dataset}-{row}.json"
    command = [sys.executable, __file__, "--one", dataset, row, "--minutes", str(minutes)]
    command += ["--work", str(out)]
    if lock is not None:
        command = ["flock", str(lock), *command]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(result.read_text())


def one(dataset: str, row: str, minutes: float, work: Path) -> None:
    spec = DATASETS[dataset]
    data = {"root": str(spec["root"]), **spec["data"]}
    extra = ROWS[row]
    if extra is None:
        numbers = plain_loop(data, minutes)
    else:
        numbers = fcn_train(data, [*spec["args"], *extra], minutes, work / f"{dataset}-{row}")
    numbers |= {"dataset": dataset, "row": row, "title": row_title(row), "minutes": minutes}
    (work / f"{dataset}-{row}.json").write_text(json.dumps(numbers, indent=1))


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == dataset]
        plain = next((r for r in rows if r["row"] == "plain"), None)
        classes = list(rows[0]["per_class_iou"])
        head = ["row", "mIoU", "vs plain", *classes, "steps", "train img/s", "val share"]
        lines.append(f"\n{dataset}")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in rows:
            ratio = f"{r['miou'] / plain['miou']:.2f}x" if plain else "-"
            cells = [r["title"], f"{r['miou']:.3f}", ratio]
            cells += [f"{v:.3f}" for v in r["per_class_iou"].values()]
            cells += [str(r["steps"]), f"{r['images_per_s']:.2f}"]
            cells.append(f"{100 * r.get('val_share', 0.0):.0f}%")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--datasets", default="dubai,isbi")
    parser.add_argument("--rows", default="plain,fcn,before,uniform-crops")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument(
        "--lock", type=Path, help="hold this flock file during each run (shared machines)"
    )
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "ROW"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--work", type=Path, help="keep the runs (checkpoints, logs) here (default: a temp folder)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.one:
        one(*args.one, args.minutes, args.work)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="recipe-bench-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        for dataset in args.datasets.split(","):
            if not DATASETS[dataset]["root"].is_dir():
                raise SystemExit(f"{DATASETS[dataset]['root']} is missing (needs ../shared)")
            for row in args.rows.split(","):
                started = time.strftime("%H:%M:%S")
                print(f"[{started}] {dataset} / {row} ({args.minutes:g} min)", flush=True)
                results.append(run_one(dataset, row, args.minutes, work, args.lock))
                print(table(results), flush=True)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "cpu": cpu_info(),
                # set: oneDNN's kernels (torch's) were capped at this ISA, e.g. AVX2
                "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                "command": " ".join(sys.argv),
                "results": results,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
