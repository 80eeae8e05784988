"""``fcn predict MODEL INPUT [INPUT ...] --out DIR``: segment files and folders.

Exit status: 0 when every input succeeded (or was skipped), 1 when any input failed, 2 on
usage errors (bad options, a model that does not load, no images found).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.backends import BACKENDS, PRECISIONS
from service.engine import config as ec
from service.formats.raster import ALPHA_MAX, ALPHA_MIN, DEFAULT_ALPHA
from service.renamed import PREDICT_FLAGS, add_renamed_flags, flag

if TYPE_CHECKING:
    from service.batch.runner import ItemResult
    from service.batch.scan import RejectedInput

# The EngineConfig fields fcn predict exposes, each as --field-name (as fcn serve names them).
ENGINE_FIELDS: tuple[str, ...] = (
    "intra_op_threads",
    "inter_op_threads",
    "concurrency",
    "memory_arena",
    "tile_size",
    "tile_overlap",
    "tile_threshold",
    "max_pixels",
    "max_side",
    "backend",
    "precision",
    "decision_cache",
)


def _formats(text: str) -> list[str]:
    from service.formats.registry import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _engine_flag(name: str) -> dict[str, Any]:
    """argparse keywords for an engine flag: its type, and help with predict's default."""
    default = ec.batch_default(name)
    raster = ec.batch_default(name, raster=True)
    default = f"{default}; {raster} for rasters" if raster != default else default
    help = f"{ec.engine_help(name)} (default: {default})"
    kwargs: dict[str, Any] = {"help": help.replace("%", "%%")}  # argparse formats help with %
    value = ec.engine_default(name)
    if isinstance(value, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(value, int):
        kwargs["type"] = _positive if name == "concurrency" else int
        kwargs["metavar"] = "N"
    elif name in ("backend", "precision"):
        kwargs["choices"] = {"backend": BACKENDS, "precision": PRECISIONS}[name]
    else:
        kwargs["metavar"] = "FILE"
    return kwargs


def batch_engine_config(args: argparse.Namespace, raster: bool = False) -> ec.EngineConfig:
    """The EngineConfig ``fcn predict`` runs with: its flags over its defaults (for images,
    or with ``raster`` for georeferenced rasters: :data:`~service.engine.config.RASTER_DEFAULTS`).

    Locally the usable cores are shared among the images run at once; a Ray actor runs one
    image at a time (service.batch.ray gives it one thread unless --intra-op-threads says more).
    """
    values = {name: ec.batch_default(name, raster) for name in ENGINE_FIELDS}
    values.update({n: getattr(args, n) for n in ENGINE_FIELDS if getattr(args, n) is not None})
    if args.engine == "local":
        values["intra_op_threads"] = ec.resolve_intra_op_threads(
            values["intra_op_threads"], values["concurrency"]
        )
    else:
        values["concurrency"] = 1
    return ec.EngineConfig(providers=ec.DEVICES[args.device], **values)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``fcn`` parser."""
    from service.formats.registry import ENCODERS
    from service.formats.shapes import DEFAULT_TOLERANCE
    from service.geo.crs import CRS_CHOICES, DEFAULT_CRS

    p = subparsers.add_parser(
        "predict",
        help="segment image files or folders with an ONNX model",
        description="Segment image files or folders with an exported ONNX model. Folders are "
        "scanned recursively and mirrored under --out. Bad files are reported and skipped; the "
        "exit code is 0 when all inputs succeeded, 1 if any failed, 2 on usage errors.",
    )
    p.add_argument(
        "model",
        help="an .onnx model file, NAME=PATH, or a bundled model: 'default' (aerial land cover) "
        "or 'demo' (generated shapes)",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--format",
        "-f",
        dest="formats",
        type=_formats,
        action="append",
        metavar="FMT",
        help="output format: "
        + "; ".join(f"{e.name} ({e.description}, *{e.suffix})" for e in ENCODERS.values())
        + ". Repeat or comma-separate for several (default: index)",
    )
    p.add_argument(
        "--recursive",
        "-r",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scan sub-folders too (default: yes; --no-recursive for the top level only)",
    )
    p.add_argument(
        "--glob",
        dest="globs",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only files whose name or path inside the folder matches (e.g. '*.png', "
        "'day1/*'); repeatable",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave images whose outputs all exist (resume an interrupted run)",
    )
    p.add_argument("--summary", metavar="FILE", help="write one row per input to FILE.csv/.json")
    p.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"overlay colour weight in [{ALPHA_MIN:g}, {ALPHA_MAX:g}] (default: {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"polygons/geojson simplification in pixels, 0 = exact ({DEFAULT_TOLERANCE:g})",
    )
    p.add_argument(
        "--crs",
        choices=CRS_CHOICES,
        default=DEFAULT_CRS,
        help="coordinates of --format geojson for a georeferenced image, as HTTP's crs=: "
        "wgs84 = RFC 7946 longitude/latitude, no crs member; native = the image's own CRS, "
        "named as GDAL reads it (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=_positive, default=None, help="decode and encode threads (each)"
    )
    p.add_argument(
        "--queue-size",
        type=_positive,
        default=ec.BATCH_QUEUE_SIZE,
        help="images in flight per stage (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        choices=tuple(ec.DEVICES),
        default=ec.DEFAULT_DEVICE,
        help=ec.DEVICE_HELP + " (default: %(default)s)",
    )
    engine_flags = {name: _engine_flag(name) for name in ENGINE_FIELDS}
    for name, kwargs in engine_flags.items():
        p.add_argument(flag(name), dest=name, default=None, **kwargs)
    add_renamed_flags(p, PREDICT_FLAGS, **engine_flags)
    from service.commands.predict_geo import add_flags

    add_flags(p)
    ray = p.add_argument_group("Ray (pip install 'fcnseg[ray]')")
    ray.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run here (local) or as a Ray Data job (ray)",
    )
    ray.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    ray.add_argument(
        "--actors", type=_positive, default=None, help="Ray actors, one model session each"
    )
    p.set_defaults(func=run)


def _hint(flag: str, exc: Exception) -> ValueError:
    return ValueError(f"{flag}: {exc}")


def run(args: argparse.Namespace) -> int:
    """Load the model, process every input, report failures and a final count."""
    from service.batch.scan import scan_inputs
    from service.engine import read_model_metadata
    from service.models import parse_spec

    config = batch_engine_config(args)
    source = parse_spec(args.model)
    options = _batch_options(args, config.concurrency, source.name)
    # The model is loaded once the inputs say with which defaults (images or rasters); its
    # metadata is read (and the file checked) first. Ray's actors load their own.
    metadata = read_model_metadata(source.path, config)
    writer = _summary_writer(args.summary, metadata.classes)
    scan = scan_inputs(args.inputs, recursive=args.recursive, globs=args.globs, exclude=[args.out])
    if not scan.items and not scan.rejected:
        where = "matching --glob " if args.globs else ""
        print(f"fcn predict: error: no images {where}found in the given inputs", file=sys.stderr)
        if writer is not None:
            writer.close()
        return 2

    from service.commands.predict_geo import run_geo, split_geo

    # Auto-detection only without --format: asked for image formats (a GeoJSON in map
    # coordinates, say), a GeoTIFF keeps the image path it always took, unless --geo.
    auto = None if not args.formats else False
    geo_items, items = split_geo(scan.items, auto if args.geo is None else args.geo)
    local = args.engine == "local"
    engine = _load_engine(source, config) if local and items else None
    report = _Reporter(_progress_bar(len(items), args.progress) if items else None, writer)
    report.rejected(scan.rejected)
    start = time.perf_counter()
    try:
        counts = _run_images(args, source, config, engine, items, options, report)
    finally:
        report.close()
    if geo_items:
        geo_config = batch_engine_config(args, raster=True)
        if local and (engine is None or geo_config != config):
            engine = None  # the images' engine goes before the rasters' is loaded
            engine = _load_engine(source, geo_config)
        geo_ok, geo_failed, geo_skipped = run_geo(
            engine, geo_items, args.out, args, source, geo_config
        )
        counts.ok, counts.failed = counts.ok + geo_ok, counts.failed + geo_failed
        counts.skipped += geo_skipped
    seconds = time.perf_counter() - start
    failed, skipped = report.failed + counts.failed, report.skipped + counts.skipped
    done = counts.ok + counts.failed
    rate = f", {done / seconds:.2f} images/s" if done and seconds > 0 else ""
    print(
        f"{counts.ok} ok, {failed} failed, {skipped} skipped in {seconds:.2f}s{rate}; "
        f"outputs in {args.out}"
    )
    return 1 if failed else 0


def _load_engine(source, config: ec.EngineConfig):
    """Load the model for a local run, saying which path serves and why (auto's checks)."""
    from service.engine import Engine

    engine = Engine.load(source.path, config)
    if engine.choice is not None:
        print(
            f"fcn predict: {engine.backend_name} {engine.precision}: {engine.choice.reason}",
            file=sys.stderr,
        )
    return engine


def _run_images(args, source, config, engine, items, options, report):
    """The image inputs through the local or Ray batch runner (counts, zero when none)."""
    from service.batch.runner import BatchCounts

    if not items:
        return BatchCounts()
    if args.engine == "ray":
        from service.batch.ray import run_ray

        return run_ray(
            source.path,
            config,
            items,
            args.out,
            options,
            address=args.address,
            actors=args.actors,
            on_result=report,
        )
    from service.batch.runner import run_batch

    return run_batch(engine, items, args.out, options, on_result=report)


def _batch_options(args: argparse.Namespace, concurrency: int, model: str):
    """The runner's options from the flags (a bad --alpha or --tolerance is a usage error)."""
    from service.batch.runner import BatchOptions

    formats = tuple(dict.fromkeys(f for group in args.formats or [["index"]] for f in group))
    try:
        return BatchOptions(
            formats=formats,
            alpha=args.alpha,
            tolerance=args.tolerance,
            crs=args.crs,
            model=model,
            skip_existing=args.skip_existing,
            rescale=args.rescale,
            queue_size=args.queue_size,
            concurrency=concurrency,
            **({"workers": args.workers} if args.workers else {}),
        )
    except ValueError as exc:
        raise _hint("--tolerance" if "tolerance" in str(exc) else "--alpha", exc) from None


def _summary_writer(path: str | None, classes: Sequence[str]):
    """The ``--summary`` writer, or None without the flag."""
    if not path:
        return None
    from service.batch.summary import SummaryWriter

    try:
        return SummaryWriter(path, classes)
    except ValueError as exc:
        raise _hint("--summary", exc) from None


class _Reporter:
    """Says each failure (above the progress bar) and writes each summary row."""

    def __init__(self, bar, writer) -> None:
        self.bar, self.writer = bar, writer
        self.failed = self.skipped = 0  # inputs refused by the scan

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)  # above the bar, which stays at the bottom
        else:
            print(line, file=sys.stderr)

    def rejected(self, rejected: Sequence[RejectedInput]) -> None:
        for item in rejected:
            self.failed += item.failed
            self.skipped += not item.failed
            self.say(f"{'FAILED' if item.failed else 'skipped'} {item.source}: {item.reason}")
        if self.writer is not None:
            from service.batch.runner import rejected_results

            for row in rejected_results(rejected):
                self.writer.write(row)

    def __call__(self, result: ItemResult) -> None:
        if result.status == "failed":
            self.say(f"FAILED {result.item.source}: {result.error}")
        if self.writer is not None:
            self.writer.write(result)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _progress_bar(total: int, force: bool):
    """A tqdm bar on stderr (images/s, ETA) when stderr is a terminal or ``force``; else None."""
    if not (force or sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
