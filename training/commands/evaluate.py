"""``fcn evaluate``: per-class IoU/Dice/accuracy of a checkpoint or an ONNX model.

Imports nothing heavy at module level; the work happens in ``training.evaluate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.commands.train import DATA_KEYS, add_data_arguments
from training.config import EVAL_SPLITS, TTA_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fcn evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="measure mIoU, per-class IoU/Dice, pixel and mean accuracy",
        description="Evaluate a training checkpoint (torch) or an exported ONNX model (the "
        "serving engine) on the validation split of a dataset (--split all: every image). "
        "Data options default to the checkpoint's training options.",
    )
    source = parser.add_argument_group(
        "model (one of, or both: --model evaluated with the checkpoint's data options)"
    )
    source.add_argument(
        "--checkpoint", type=Path, metavar="RUN/best.pt", help="training checkpoint"
    )
    source.add_argument("--model", type=Path, metavar="MODEL.onnx", help="exported ONNX model")
    add_data_arguments(parser, data_required=False)
    parser.add_argument("--seed", type=int, help="split seed (default: the checkpoint's, or 0)")
    parser.add_argument(
        "--split",
        choices=EVAL_SPLITS,
        default=EVAL_SPLITS[0],
        help=f"which images (default {EVAL_SPLITS[0]})",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="--checkpoint: hflip averages each image's logits with its mirror image's "
        "(default none; an exported model applies what its export recorded)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="also write the metrics")
    parser.add_argument("--device", default="auto", help="torch device (default auto)")
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images per forward pass (default 4)"
    )
    parser.add_argument(
        "--backend", default="auto", help="--model: auto (default), ort or openvino"
    )
    parser.add_argument(
        "--precision", default="auto", help="--model: auto (default), fp32, bf16 or int8"
    )
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_checkpoint, evaluate_onnx, write_json
    from training.loop.metrics import format_table

    if args.checkpoint is None and args.model is None:
        raise ValueError("give --checkpoint RUN/best.pt or --model MODEL.onnx")
    if args.model is not None and args.tta != "none":
        raise ValueError(
            "--tta applies to a --checkpoint; an exported model predicts with the test-time "
            "augmentation chosen at export (fcn export --tta)"
        )
    overrides = {k: getattr(args, k) for k in DATA_KEYS}
    root = str(args.data) if args.data is not None else None
    if args.model is not None:
        report = evaluate_onnx(
            args.model,
            root=root,
            split=args.split,
            checkpoint=args.checkpoint,
            backend=args.backend,
            precision=args.precision,
            **overrides,
        )
    else:
        report = evaluate_checkpoint(
            args.checkpoint,
            root=root,
            split=args.split,
            device=args.device,
            batch_size=args.batch_size,
            tta=args.tta,
            **overrides,
        )
    served = f" [{report.served_by}]" if report.served_by else ""
    print(f"{report.model}{served} on {report.data} ({report.split}: {report.images} images)")
    print(format_table(report.metrics))
    if args.json is not None:
        print(f"wrote {write_json(report, args.json)}")
    return 0
