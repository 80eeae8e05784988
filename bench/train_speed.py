"""Claim: ``fcn train`` trains at >= 0.95x the images/s of a plain 40-line smp loop.

Both train U-Net/ResNet-18 (no pretrained weights) on the ISBI 2012 EM training split with
the same batch and crop. The plain loop is the reference: images decoded once into numpy,
random crops + flips in numpy, AdamW 1e-3, cross-entropy, float32, nothing else. ``fcn train``
runs through ``training.loop.train.train`` with its default options (data pipeline, ce+dice loss,
schedule, channels_last, bfloat16 autocast where the CPU has it natively); a third row runs
it with ``bf16=False`` to show what the float32 path alone does. Each ``fcn train`` rate is
the training-phase throughput it reports for its second epoch (the first one warms up;
validation is not counted, as the plain loop has none). Segments run A B C C B A ... so
drifting machine load hits all equally.

Usage::

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/train_speed.py [--rounds 1] [--steps 10]

Prints a table and writes bench/results/train_speed.json.
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
import segmentation_models_pytorch as smp
import torch
from _cpu import cpu_info
from _paths import SHARED_DATA
from PIL import Image

from training.config import AugmentConfig, DataConfig, TrainConfig
from training.data.datasets import list_pairs
from training.loop.epoch import cpu_has_native_bf16
from training.loop.train import train

DATA = SHARED_DATA / "isbi2012_em_membrane"
RESULTS = Path(__file__).parent / "results" / "train_speed.json"


def plain_loop(
    images: list[np.ndarray],
    masks: list[np.ndarray],
    steps: int,
    warmup: int,
    batch: int,
    crop: int,
    seed: int,
) -> float:
    """The reference loop; returns images/s over ``steps`` after ``warmup`` steps."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=1, classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        xs, ys = [], []
        for _ in range(batch):
            i = rng.integers(len(images))
            y0, x0 = rng.integers(0, images[i].shape[0] - crop + 1, 2)
            x = images[i][y0 : y0 + crop, x0 : x0 + crop]
            y = masks[i][y0 : y0 + crop, x0 : x0 + crop]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x)
            ys.append(y)
        x = torch.from_numpy(np.stack(xs)[:, None].astype(np.float32) / 255.0)
        y = torch.from_numpy((np.stack(ys) > 127).astype(np.int64))
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def fcn_train(steps: int, batch: int, crop: int, seed: int, bf16: bool | None = None) -> float:
    """``fcn train`` defaults for two epochs of ``steps`` steps; epoch 2's images/s."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data=DataConfig(
                root=str(DATA),
                mask_values=[0, 255],
                val_fraction=0.2,
                seed=seed,
                augment=AugmentConfig(crop_size=crop),
            ),
            out=out,
            epochs=2,
            epoch_size=steps * batch,
            batch_size=batch,
            seed=seed,
            plots=False,
            bf16=bf16,
        )
        result = train(cfg)
    return float(result.history[-1]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="A B C C B A rounds (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per segment")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = DataConfig(root=str(DATA), mask_values=[0, 255], val_fraction=0.2)
    pairs = list_pairs(cfg, "train")
    images = [np.asarray(Image.open(p.image).convert("L")) for p in pairs]
    masks = [np.asarray(Image.open(p.mask)) for p in pairs]
    loops = {
        "plain smp": lambda i: plain_loop(images, masks, args.steps, 2, args.batch, args.crop, i),
        "fcn train": lambda i: fcn_train(args.steps, args.batch, args.crop, seed=i),
        "fcn fp32": lambda i: fcn_train(args.steps, args.batch, args.crop, seed=i, bf16=False),
    }
    names = list(loops)
    order = []
    for r in range(args.rounds):
        order += names + names[::-1] if r % 2 == 0 else names[::-1] + names
    rates: dict[str, list[float]] = {name: [] for name in names}
    for i, name in enumerate(order):
        rates[name].append(loops[name](i))
        print(
            f"segment {i + 1}/{len(order)}: {name:<10} {rates[name][-1]:6.2f} images/s", flush=True
        )
    means = {name: statistics.mean(values) for name, values in rates.items()}
    plain_mean = means["plain smp"]
    ratio = means["fcn train"] / plain_mean
    print(f"\n{'loop':<12} {'images/s':>9} {'vs plain':>9}   segments")
    for name in names:
        values = " ".join(f"{v:.2f}" for v in rates[name])
        print(f"{name:<12} {means[name]:9.2f} {means[name] / plain_mean:8.2f}x   {values}")
    print(
        f"fcn train (defaults) / plain: {ratio:.3f} (claim: >= 0.95) -> "
        f"{'PASS' if ratio >= 0.95 else 'FAIL'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "claim": "fcn train images/s >= 0.95x plain smp loop",
                "batch": args.batch,
                "crop": args.crop,
                "steps_per_segment": args.steps,
                "images_per_s": rates,
                "means": means,
                "ratio": ratio,
                "ratio_fp32": means["fcn fp32"] / plain_mean,
                "cpu_bf16": cpu_has_native_bf16(),
                "passed": ratio >= 0.95,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu": cpu_info(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
