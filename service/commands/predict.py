"""``fcn predict MODEL.onnx INPUT [INPUT ...] --out DIR``: segment files and folders."""

from __future__ import annotations

import argparse
import sys

DEVICES = {
    "auto": None,
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


def _formats(text: str) -> list[str]:
    from service.masks import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``fcn`` parser."""
    p = subparsers.add_parser(
        "predict",
        help="segment image files or folders with an ONNX model",
        description="Segment image files or folders with an exported ONNX model. Bad files are "
        "reported and skipped; the exit code is 1 if any input failed.",
    )
    p.add_argument("model", help="the .onnx model (exported with its metadata)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--format",
        "-f",
        dest="formats",
        type=_formats,
        action="append",
        metavar="FMT",
        help="output format: index (class-index PNG), color, overlay, json; repeat or "
        "comma-separate for several (default: index)",
    )
    p.add_argument("--recursive", "-r", action="store_true", help="scan sub-folders too")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight (0.5)")
    p.add_argument("--device", choices=tuple(DEVICES), default="auto", help="execution provider")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT default)")
    p.add_argument("--inter-threads", type=int, default=0, help="inter-op threads (0: default)")
    p.add_argument("--tile-size", type=int, default=None, help="sliding-window side (512)")
    p.add_argument("--tile-overlap", type=int, default=None, help="window overlap (128)")
    p.add_argument(
        "--tile-threshold", type=int, default=None, help="tile images above this many pixels"
    )
    p.add_argument("--max-pixels", type=int, default=None, help="reject larger images")
    p.add_argument("--max-side", type=int, default=None, help="reject longer sides")
    p.add_argument(
        "--backend",
        default="auto",
        help="auto (default), ort or openvino (pip install 'fcnseg[openvino]')",
    )
    p.add_argument(
        "--precision",
        default="auto",
        help="auto (default: the fastest path the export verified), fp32, bf16 or int8",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, process every input, print one line per input; 1 if any failed."""
    from service.batch import ItemResult, collect_inputs, run_batch
    from service.engine import Engine, EngineConfig

    overrides = {
        "tile_size": args.tile_size,
        "tile_overlap": args.tile_overlap,
        "tile_threshold": args.tile_threshold,
        "max_pixels": args.max_pixels,
        "max_side": args.max_side,
    }
    config = EngineConfig(
        providers=DEVICES[args.device],
        intra_op_threads=args.threads,
        inter_op_threads=args.inter_threads,
        backend=args.backend,
        precision=args.precision,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    formats = list(dict.fromkeys(f for group in args.formats or [["index"]] for f in group))
    engine = Engine.load(args.model, config)
    items, failures = collect_inputs(args.inputs, recursive=args.recursive)
    for failure in failures:
        print(f"FAILED {failure.item.source}: {failure.error}", file=sys.stderr)
    if not items and not failures:
        print("fcn predict: no images found in the given inputs", file=sys.stderr)
        return 1

    def report(result: ItemResult) -> None:
        if result.ok:
            height, width = result.size
            print(f"ok     {result.item.source} ({width}x{height}, {result.seconds:.2f}s)")
        else:
            print(f"FAILED {result.item.source}: {result.error}", file=sys.stderr)

    results = run_batch(engine, items, args.out, formats, alpha=args.alpha, on_result=report)
    succeeded = sum(r.ok for r in results)
    failed = len(failures) + len(results) - succeeded
    print(f"{succeeded} ok, {failed} failed; outputs in {args.out}")
    return 1 if failed else 0
