"""``fcn data``: generate the demo dataset (``demo``) or check a dataset before training (``check``).

Imports nothing heavy at module level; the work happens in ``training.data.demo`` / ``training.data.datasets``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.train import int_list, str_list
from training.config import LAYOUTS, DataConfig, default_of


def _echo(line: str) -> None:
    print(line)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fcn data demo`` and ``fcn data check``."""
    parser = subparsers.add_parser("data", help="generate the demo dataset or check a dataset")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    demo = actions.add_parser(
        "demo",
        help="write the generated shapes dataset (5 classes)",
        description="Write DIR/images/*.png, DIR/masks/*.png (class indices) and DIR/dataset.json. "
        "The same seed always gives byte-identical files.",
    )
    demo.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    demo.add_argument("--count", type=int, default=64, help="number of images (default 64)")
    demo.add_argument("--size", type=int, default=256, help="side in pixels (default 256)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=run_demo)

    check = actions.add_parser(
        "check",
        help="read every image and mask the way training will, and summarise the dataset",
    )
    check.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder")
    check.add_argument("--layout", default=default_of(DataConfig, "layout"), choices=LAYOUTS)
    check.add_argument("--val-fraction", type=float, default=default_of(DataConfig, "val_fraction"))
    check.add_argument("--seed", type=int, default=default_of(DataConfig, "seed"))
    check.add_argument(
        "--mask-values",
        type=int_list,
        metavar="V0,V1,...",
        help="raw mask value of each class, e.g. 0,255 for binary masks",
    )
    check.add_argument("--ignore-index", type=int, default=default_of(DataConfig, "ignore_index"))
    check.add_argument("--classes", type=str_list, metavar="NAME,NAME,...")
    check.set_defaults(func=run_check)


def run_demo(args: argparse.Namespace) -> int:
    from training.data.demo import write_demo

    out = write_demo(args.out, count=args.count, size=args.size, seed=args.seed)
    _echo(f"wrote {args.count} images of {args.size}x{args.size} to {out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import numpy as np

    from training.data.datasets import build_datasets, list_pairs

    cfg = DataConfig(
        root=str(args.data),
        layout=args.layout,
        val_fraction=args.val_fraction,
        seed=args.seed,
        mask_values=args.mask_values,
        ignore_index=args.ignore_index,
        classes=args.classes,
    )
    _, dataset, info = build_datasets(cfg, split="all")
    counts = np.zeros(info.num_classes + 1, dtype=np.int64)  # last slot: ignored pixels
    for index in range(len(dataset)):
        _, mask = dataset.load(index)  # decodes and validates every mask
        flat = mask.ravel().astype(np.int64)
        known = (flat >= 0) & (flat < info.num_classes)
        counts[:-1] += np.bincount(flat[known], minlength=info.num_classes)
        counts[-1] += int((~known).sum())
    n_val = len(list_pairs(cfg, "val"))
    _echo(f"{args.data}: layout {info.layout}, {len(dataset)} pairs ({n_val} for validation)")
    _echo(f"in_channels {info.in_channels}, mean {info.mean}, std {info.std}")
    total = max(int(counts.sum()), 1)
    for index, name in enumerate(info.classes):
        _echo(f"  {index:3d} {name:<20} {100 * counts[index] / total:6.2f}% of pixels")
    _echo(f"      {'(ignored)':<20} {100 * counts[-1] / total:6.2f}% of pixels")
    return 0
