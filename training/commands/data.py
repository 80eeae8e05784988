"""``fcn data``: generate the demo dataset (``demo``), check a dataset before training (``check``),
or import a Label Studio export (``import-label-studio``).

Imports nothing heavy at module level; the work happens in ``training.data.demo`` / ``training.data.datasets``.
"""

from __future__ import annotations

import argparse
import os
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

    ls = actions.add_parser(
        "import-label-studio",
        help="turn a Label Studio JSON export (brush and polygon labels) into a dataset folder",
        description="Write DIR/images, DIR/masks (class-index PNGs) and DIR/dataset.json from a "
        "Label Studio JSON export, for `fcn train --data DIR`. Per task the latest annotation "
        "that was not cancelled is used; pixels no region covers get --ignore-index. Images come "
        "from --images (matched by file name) or from Label Studio itself (--label-studio-url "
        "and --token). docs/label-studio.md has the whole loop.",
    )
    ls.add_argument("export", type=Path, help="the JSON export (Export -> JSON in Label Studio)")
    ls.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new output folder")
    ls.add_argument(
        "--classes",
        type=str_list,
        metavar="NAME,NAME,...",
        help="class names in index order (default: --model's, else every label used, by name)",
    )
    ls.add_argument(
        "--model", type=Path, help="take class names and palette from this ONNX model's metadata"
    )
    ls.add_argument("--images", type=Path, metavar="DIR", help="folder holding the task images")
    ls.add_argument(
        "--label-studio-url",
        metavar="URL",
        help="Label Studio's address, to fetch images (e.g. http://localhost:8080)",
    )
    ls.add_argument(
        "--token",
        help="Label Studio API token (legacy token; default: $LABEL_STUDIO_API_KEY)",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
    )
    ls.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also fetch absolute image URLs from HOST (name or name:port); repeatable",
    )
    ls.add_argument(
        "--image-key", help="task data field with the image URL (default: the only one)"
    )
    ls.add_argument(
        "--ignore-index",
        type=int,
        default=default_of(DataConfig, "ignore_index"),
        help="mask value of pixels no region covers (default %(default)s: left out of the loss)",
    )
    ls.set_defaults(func=run_import_label_studio)


def run_import_label_studio(args: argparse.Namespace) -> int:
    from service.labeling.fetch import ImageFetcher
    from training.data.label_studio import MAX_IMAGE_BYTES, LabelStudioImportError, import_export

    classes, palette = args.classes, None
    if args.model is not None:
        from service.engine import read_model_metadata
        from service.errors import ModelError

        try:
            meta = read_model_metadata(args.model)
        except ModelError as exc:
            raise SystemExit(f"error: --model: {exc}") from None
        classes = classes or list(meta.classes)
        palette = [list(c) for c in meta.palette] if list(meta.classes) == classes else None
    fetcher = None
    if args.label_studio_url:
        fetcher = ImageFetcher(
            base_url=args.label_studio_url,
            token=args.token,
            allowed_hosts=tuple(args.allow_host),
            max_bytes=MAX_IMAGE_BYTES,
            timeout_s=60.0,
        )
    try:
        report = import_export(
            args.export,
            args.out,
            classes=classes,
            palette=palette,
            images=args.images,
            fetcher=fetcher,
            image_key=args.image_key,
            ignore_index=args.ignore_index,
        )
    except LabelStudioImportError as exc:
        raise SystemExit(f"error: {exc}") from None
    _echo(f"{report.summary()} -> {args.out}")
    return 0


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
