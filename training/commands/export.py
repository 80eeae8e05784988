"""``fcn export``: checkpoint -> ONNX (metadata inside, parity-checked), optionally INT8 too.

Imports nothing heavy at module level; the work happens in ``training.export.onnx`` and
``training.export.quantize``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from service.backends.select import MAX_MIOU_DROP
from training.commands.train import key_value
from training.config import EXPORTERS, TTA_MODES, DataConfig

# The split calibration uses when neither the flags nor the checkpoint say: the training defaults.
SPLIT_DEFAULTS = {
    f.name: f.default for f in fields(DataConfig) if f.name in ("val_fraction", "seed")
}
# fcn export's own defaults (training.export.bundle and .quantize import torch, so this module,
# read for `fcn --help`, names the values; tests/training/test_export_defaults.py checks they agree).
BUNDLE_MAX_MB = 15.0
CALIBRATION_METHOD = "minmax"


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The model to read, the ONNX file to write and how it is exported."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", type=Path, metavar="RUN/best.pt", help="training checkpoint to export"
    )
    source.add_argument(
        "--onnx",
        type=Path,
        metavar="MODEL.onnx",
        help="an already exported model: only quantize it",
    )
    source.add_argument(
        "--source",
        type=Path,
        metavar="MODEL.fp16.onnx",
        help="an fp16 source file (written by --fp16-source): rebuild the fp32 model at --out, "
        "then quantize and check it as after --checkpoint",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="MODEL.onnx",
        help="FP32 output (default model.onnx; with --onnx: unused)",
    )
    parser.add_argument(
        "--fp16-source",
        type=Path,
        metavar="DEST.fp16.onnx",
        help="also keep the fp32 model's weights as an fp16 source file (half the size; "
        "--source rebuilds the fp32 model from it)",
    )
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default=EXPORTERS[0],
        help=f"torch.export-based or TorchScript tracing (default {EXPORTERS[0]})",
    )
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the pinned one)")
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="hflip: the graph averages each image's logits with its mirror image's (twice "
        "the inference cost; recorded in the metadata; default none)",
    )
    parser.add_argument(
        "--skip-parity", action="store_true", help="do not compare with torch (not recommended)"
    )
    parser.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra metadata entry, e.g. how the model was made (repeatable; VALUE read as "
        "JSON when it parses)",
    )


def _add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """Static INT8 quantization and its calibration images."""
    quant = parser.add_argument_group("INT8 quantization")
    quant.add_argument("--quantize", choices=("int8",), help="also write a static INT8 model")
    quant.add_argument(
        "--calibration-data",
        type=Path,
        metavar="DIR",
        help="images, or a dataset (its training split is used)",
    )
    quant.add_argument(
        "--int8-out",
        type=Path,
        metavar="MODEL.int8.onnx",
        help="INT8 output (default: <out stem>.int8.onnx)",
    )
    quant.add_argument(
        "--calibration-method",
        choices=("minmax", "percentile", "entropy"),
        default=CALIBRATION_METHOD,
        help="activation range estimator (default %(default)s)",
    )
    quant.add_argument(
        "--calibration-size",
        type=int,
        metavar="PX",
        help="centre crops of this side (default: natural image size)",
    )
    quant.add_argument(
        "--calibration-limit",
        type=int,
        default=32,
        metavar="N",
        help="at most N images (default %(default)s)",
    )
    quant.add_argument(
        "--fp32-head", action="store_true", help="keep the classifier convolution(s) in FP32"
    )
    quant.add_argument(
        "--full-range-weights",
        action="store_true",
        help="8-bit weights (default: 7-bit, which CPUs without VNNI multiply without "
        "saturating; docs/cpus.md)",
    )
    quant.add_argument(
        "--val-fraction",
        type=float,
        help="dataset split (default: the checkpoint's, else "
        f"{SPLIT_DEFAULTS['val_fraction']:g}); calibration never sees validation images",
    )
    quant.add_argument(
        "--seed",
        type=int,
        help=f"dataset split seed (default: checkpoint's, else {SPLIT_DEFAULTS['seed']})",
    )


def _add_bundle_arguments(parser: argparse.ArgumentParser) -> None:
    """Copying the file ``--precision auto`` would serve."""
    ship = parser.add_argument_group("bundling")
    ship.add_argument(
        "--bundle",
        type=Path,
        metavar="DEST.onnx",
        help="after the checks, copy the one file `--precision auto` would serve to DEST: the "
        f"INT8 copy when every recorded INT8 check lost <= {MAX_MIOU_DROP:g} mIoU point, else fp32",
    )
    ship.add_argument(
        "--bundle-max-mb",
        type=float,
        default=BUNDLE_MAX_MB,
        metavar="MB",
        help="refuse to bundle a file larger than this (default %(default)g)",
    )


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The precision checks recorded in the models' metadata."""
    check = parser.add_argument_group("precision checks (what `--precision auto` may serve)")
    check.add_argument(
        "--verify-data",
        type=Path,
        metavar="DIR",
        help="dataset whose validation split the bf16/INT8 paths are compared with fp32 on "
        "(default: --calibration-data, else the checkpoint's data)",
    )
    check.add_argument(
        "--no-verify",
        action="store_true",
        help="record no checks: auto precision then serves ONNX Runtime fp32",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fcn export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (and optionally a static INT8 copy)",
        description="Write an ONNX model with dynamic batch/height/width and the metadata the "
        "service reads (classes, palette, normalisation, size multiple). The file is only "
        "written after ONNX Runtime, run through the serving engine, reproduces torch's logits "
        "on odd sizes. With --quantize int8 a QDQ INT8 copy is calibrated on real images.",
    )
    _add_export_arguments(parser)
    _add_quantize_arguments(parser)
    _add_bundle_arguments(parser)
    _add_check_arguments(parser)
    parser.set_defaults(func=run_export)


def _split_options(args: argparse.Namespace) -> dict:
    """Split rule for calibration: the flags, else the checkpoint's, else the training defaults."""
    saved: dict = {}
    if args.checkpoint is not None:
        from training.checkpoint import load_checkpoint

        saved = load_checkpoint(args.checkpoint).config.get("data") or {}
    return {
        "val_fraction": args.val_fraction
        if args.val_fraction is not None
        else saved.get("val_fraction", SPLIT_DEFAULTS["val_fraction"]),
        "seed": args.seed if args.seed is not None else saved.get("seed", SPLIT_DEFAULTS["seed"]),
        "layout": saved.get("layout", "auto"),
    }


def run_export(args: argparse.Namespace) -> int:
    if args.quantize and args.calibration_data is None:
        raise ValueError("--quantize int8 needs --calibration-data DIR (images to calibrate on)")
    if args.onnx is not None and not args.quantize:
        raise ValueError("--onnx MODEL only makes sense with --quantize int8")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    if args.calibration_data is not None and not args.calibration_data.is_dir():
        raise ValueError(f"--calibration-data {args.calibration_data} is not a folder")

    from training.export.onnx import OPSET, PARITY_SIZES, export_checkpoint

    fp32, int8 = args.onnx, None
    if args.source is not None:
        from training.export.recover import rebuild_from_source

        fp32 = rebuild_from_source(args.source, args.out or Path("model.onnx"), dict(args.metadata))
        print(f"wrote {fp32} (fp32, rebuilt from the fp16 source {args.source})")
    if args.checkpoint is not None:
        out = args.out or Path("model.onnx")
        result = export_checkpoint(
            args.checkpoint,
            out,
            opset=args.opset or OPSET,
            exporter=args.exporter,
            parity_sizes=None if args.skip_parity else PARITY_SIZES,
            extra_metadata=dict(args.metadata),
            tta=args.tta,
        )
        fp32 = result.path
        meta = result.metadata
        print(
            f"wrote {result.path} ({meta.arch}, {meta.num_classes} classes, "
            f"opset {meta.extra['opset']}) in {result.seconds:.1f}s"
        )
        if result.parity is not None:
            worst = max(result.parity.max_abs_diff)
            sizes = ", ".join(f"{h}x{w}" for h, w in result.parity.sizes)
            print(
                f"parity with torch at {sizes}: max |logit diff| {worst:.2e}, argmax "
                f"agreement {min(result.parity.argmax_agreement):.4%}"
            )
    if args.quantize:
        from training.export.quantize import calibration_images, quantize_int8

        split = _split_options(args)
        images = calibration_images(args.calibration_data, limit=args.calibration_limit, **split)
        int8_out = args.int8_out or fp32.with_name(f"{fp32.name.removesuffix('.onnx')}.int8.onnx")
        q = quantize_int8(
            fp32,
            int8_out,
            images,
            method=args.calibration_method,
            size=args.calibration_size,
            exclude_head=args.fp32_head,
            reduce_range=not args.full_range_weights,
        )
        int8 = q.path
        print(
            f"wrote {q.path} (static INT8, QDQ, {args.calibration_method} calibration on "
            f"{len(images)} images; argmax agrees with FP32 on {q.agreement:.3%} of pixels) "
            f"in {q.seconds:.1f}s"
        )
    if args.fp16_source is not None:
        from training.export.recover import write_fp16_source

        write_fp16_source(fp32, args.fp16_source)
        print(f"wrote {args.fp16_source} (fp16 source of {fp32})")
    if not args.no_verify:
        _verify(args, fp32, int8)
    if args.bundle is not None:
        from training.export.bundle import bundle

        chosen, reason = bundle(fp32, args.bundle, max_mb=args.bundle_max_mb)
        print(f"bundled {chosen} -> {args.bundle} ({reason})")
    return 0


def _verify(args: argparse.Namespace, fp32: Path, int8: Path | None) -> None:
    """Measure each faster path against fp32 and record it in the models' metadata."""
    from training.export.verify import candidate_paths, check_precisions, record_checks

    # Only files this run wrote are changed: an --onnx input stays as it was.
    fp32_written = args.checkpoint is not None or args.source is not None
    written = ([fp32] if fp32_written else []) + ([int8] if int8 else [])
    root = args.verify_data or args.calibration_data
    if root is None and args.checkpoint is not None:
        from training.checkpoint import load_checkpoint

        saved = load_checkpoint(args.checkpoint).config.get("data") or {}
        root = Path(saved["root"]) if saved.get("root") else None
    if not candidate_paths(int8) or not written:
        print("precision checks: nothing to check here (no INT8 file, no openvino bf16)")
        return
    if root is None or not root.is_dir():
        print(
            "precision checks skipped: no dataset found (--verify-data DIR); "
            "--precision auto will serve ONNX Runtime fp32"
        )
        return
    try:
        checks = check_precisions(fp32, int8, root=str(root), checkpoint=args.checkpoint)
    except ValueError as exc:
        if args.verify_data is not None:
            raise
        # An image folder, or data the model was not trained on: nothing to verify against.
        print(f"precision checks skipped: {root} is not a labelled dataset for this model ({exc})")
        return
    record_checks(checks, *written)
    ref = checks["reference"]["miou"]
    print(
        f"precision checks on {checks['images']} {checks['split']} images of {root} "
        f"(ort fp32 mIoU {ref:.2f}), recorded in the metadata:"
    )
    for key, r in checks["results"].items():
        agreement = r["argmax_agreement"]
        print(f"  {key}: mIoU {r['miou']:.2f} ({r['miou_delta']:+.2f} points), {agreement:.4%}")
