"""The GeoTIFF half of ``fcn predict``: its flags, which inputs take it, and its report.

A georeferenced raster (auto-detected, or every TIFF with ``--geo``) is segmented by
:func:`service.geo.run.segment_raster` into ``NAME_mask.tif`` (a COG, + ``NAME_prob.tif`` with
``--probabilities``) and a STAC Item ``NAME.stac.json`` describing them
(:mod:`service.geo.stac`) instead of going through the image batch: it is read by windows, so
``--max-pixels`` does not apply to it. With ``--vectors`` the finished mask is also polygonized
(:func:`service.geo.vectors.write_vectors`, block by block) into ``NAME_mask.gpkg`` (or
``.fgb``/``.geojson``). Progress counts tiles and km^2; each raster ends with a line giving its
km^2/hour.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.batch.scan import BatchItem
    from service.engine import Engine, EngineConfig
    from service.geo.run import GeoResult
    from service.models import ModelSource


def _bands(text: str) -> tuple[int, ...]:
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 1-based band numbers like 3,2,1, got {text!r}"
        ) from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"band numbers start at 1, got {text!r}")
    return bands


def _range(text: str) -> tuple[float, float]:
    from service.rescale import parse_rescale

    try:
        value = parse_rescale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value is None:
        raise argparse.ArgumentTypeError("expected MIN,MAX like 0,4095, got nothing")
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The ``GeoTIFF`` argument group of ``fcn predict``."""
    geo = parser.add_argument_group("GeoTIFF rasters (pip install 'fcnseg[geo]'; docs/gis.md)")
    geo.add_argument(
        "--geo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="segment TIFF inputs as georeferenced rasters of any size into COGs (default: "
        "auto, for .tif files with a CRS or transform when no --format is given; --no-geo: "
        "never)",
    )
    geo.add_argument(
        "--bands",
        type=_bands,
        default=None,
        metavar="B,B,B",
        help="1-based raster bands in the model's channel order, e.g. 3,2,1 (default: the "
        "non-alpha bands, which must match the model's channels)",
    )
    geo.add_argument(
        "--rescale",
        type=_range,
        default=None,
        metavar="MIN,MAX",
        help="map raw values MIN..MAX linearly to 0..255 in every band, for rasters and "
        "images alike, as HTTP's rescale= (default: 8-bit as is, other depths each band's "
        "2nd-98th percentile from a decimated read; docs/gis.md)",
    )
    geo.add_argument(
        "--probabilities",
        action="store_true",
        help="also write NAME_prob.tif: one uint8 band per class (softmax x 255)",
    )
    geo.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted raster from its last finished tile row, and leave "
        "rasters whose outputs exist",
    )
    _add_vector_flags(geo)


# --vectors FORMAT -> the GDAL driver; GeoPackage and FlatGeobuf keep the raster's CRS, GeoJSON
# is RFC 7946 WGS 84 unless --vector-crs native.
VECTOR_FORMATS = {"gpkg": "GPKG", "fgb": "FlatGeobuf", "geojson": "GeoJSON"}


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of map units, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _add_vector_flags(geo) -> None:
    geo.add_argument(
        "--vectors",
        choices=sorted(VECTOR_FORMATS),
        default=None,
        help="also polygonize each raster's mask into NAME_mask.gpkg/.fgb/.geojson (merged "
        "across blocks, an area per polygon; default: none)",
    )
    geo.add_argument(
        "--vector-tolerance",
        type=_tolerance,
        default=0.0,
        metavar="METRES",
        help="simplify polygons by this many map units (default: 0, the exact pixel outlines)",
    )
    geo.add_argument(
        "--vector-crs",
        choices=("native", "wgs84"),
        default=None,
        help="coordinates of --vectors: the raster's CRS (default for gpkg and fgb) or WGS 84 "
        "longitude/latitude (default for geojson, as RFC 7946 requires)",
    )


def vector_options(args: argparse.Namespace):
    """The :class:`~service.geo.vectors.VectorOptions` of ``--vectors``, or None without it."""
    if not args.vectors:
        return None
    from service.geo.vectors import VectorOptions

    return VectorOptions(VECTOR_FORMATS[args.vectors], args.vector_tolerance, args.vector_crs)


def write_raster_vectors(mask: Path, stem: Path, args: argparse.Namespace, classes) -> str:
    """Polygonize one finished mask as ``--vectors`` asks; returns the report line."""
    from service.geo.vectors import write_mask_vectors

    options = vector_options(args)
    summary = write_mask_vectors(mask, stem, options, classes)
    return f"{summary.features} polygons ({options.resolved_crs}) -> {summary.path}"


def split_geo(items: Sequence[BatchItem], geo: bool | None) -> tuple[list, list]:
    """``(geo_items, image_items)`` by ``--geo`` (True: every TIFF, None: auto, False: none)."""
    if geo is False:
        return [], list(items)
    from service.geo.run import GEO_SUFFIXES, is_georaster

    picked, rest = [], []
    for item in items:
        tiff = item.source.suffix.lower() in GEO_SUFFIXES
        (picked if tiff and (geo or is_georaster(item.source)) else rest).append(item)
    return picked, rest


def run_geo(
    engine: Engine | None,
    items: Sequence[BatchItem],
    out: str,
    args: argparse.Namespace,
    model: ModelSource,
    config: EngineConfig,
) -> tuple[int, int, int]:
    """Segment each raster; returns ``(ok, failed, skipped)``. Failures are said and counted.

    Locally with ``engine``; with ``--engine ray`` (``engine`` None) each raster's tile rows
    are split across Ray workers (:mod:`service.geo.ray`).
    """
    from service.batch.runner import describe_error
    from service.engine import read_model_metadata
    from service.geo.run import GeoOptions, output_paths, segment_raster
    from service.geo.stac import lists_all

    classes = list(read_model_metadata(model.path).classes)

    options = GeoOptions(
        bands=args.bands,
        rescale=args.rescale,
        probabilities=args.probabilities,
        resume=args.resume,
        streams=config.concurrency,
        model=model.name,
    )
    if engine is None:
        from service.geo.ray import segment_raster_ray

        def segment(source, stem, options, on_progress):
            return segment_raster_ray(
                model.path,
                config,
                source,
                stem,
                options,
                address=args.address,
                actors=args.actors,
                on_progress=on_progress,
            )
    else:

        def segment(source, stem, options, on_progress):
            return segment_raster(engine, source, stem, options, on_progress=on_progress)

    ok = failed = skipped = 0
    for item in items:
        stem = Path(out) / item.stem
        targets = output_paths(stem, options.probabilities)
        targets += [vector_options(args).path(stem)] if args.vectors else []
        if args.resume and all(p.exists() for p in targets) and lists_all(stem, targets):
            print(f"skipped {item.source}: outputs already exist", file=sys.stderr)
            skipped += 1
            continue
        bar = _bar(item, args.progress)
        try:
            result = segment(item.source, stem, options, bar)
            vectors = ""
            if args.vectors:
                vectors = write_raster_vectors(result.outputs[0], stem, args, classes)
        except Exception as exc:  # one bad raster never stops the others
            print(f"FAILED {item.source}: {describe_error(exc)}", file=sys.stderr)
            failed += 1
            continue
        finally:
            bar.close()
        print(describe(result) + (f"; vectors: {vectors}" if vectors else ""), file=sys.stderr)
        ok += 1
    return ok, failed, skipped


def describe(result: GeoResult) -> str:
    """The per-raster report line: size, tiles, area, time and km^2/hour."""
    hours = result.seconds / 3600.0
    area = ""
    if result.km2 is not None and hours > 0:
        area = f", {result.km2:.3f} km^2 at {result.km2 / hours:.2f} km^2/hour"
    resumed = f", resumed after {result.strips_resumed} tile rows" if result.strips_resumed else ""
    outputs = ", ".join(str(p) for p in [*result.outputs, *([result.item] if result.item else [])])
    return (
        f"{result.source}: {result.width} x {result.height} px, {result.tiles} tiles "
        f"({result.tiles_run} run{resumed}) in {result.seconds:.1f}s{area} -> {outputs}"
    )


class _bar:
    """A tqdm bar in tiles with km^2 done, on a terminal or with --progress; else silent."""

    def __init__(self, item: BatchItem, force: bool) -> None:
        self.tqdm = None
        self.name = item.source.name
        self.force = force

    def __call__(self, progress) -> None:
        if not (self.force or sys.stderr.isatty()):
            return
        if self.tqdm is None:
            from tqdm import tqdm

            self.tqdm = tqdm(
                total=progress.tiles_total, unit="tile", desc=self.name, file=sys.stderr
            )
        self.tqdm.update(progress.tiles_done - self.tqdm.n)
        if progress.km2_done is not None:
            self.tqdm.set_postfix_str(f"{progress.km2_done:.2f}/{progress.km2_total:.2f} km^2")

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
