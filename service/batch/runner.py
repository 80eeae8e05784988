"""Segment a list of images into an output folder, pipelined (the engine behind ``fcn predict``).

Three stages per image, the ones of :mod:`service.pipeline`: decode, infer, encode + write,
each on its own thread pool (Pillow, zlib and ONNX Runtime all release the GIL): decoding and
encoding/writing overlap with ONNX Runtime, which runs ``concurrency`` images at once on one
shared session. At most ``2 * queue_size + concurrency`` images are in flight, so memory
stays flat however many images there are.

Results come back in input order through ``on_result``, one :class:`ItemResult` per image: a
bad file never stops the batch, its result carries the reason. Outputs are written atomically
(:mod:`service.batch.writer`), and ``skip_existing`` resumes a killed run.

:func:`process_item` is the same three stages in sequence for one image: what the Ray runner's
actors call, so both engines write the same bytes under the same names.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service import pipeline
from service.bands import InputNotes, collect_notes
from service.batch.scan import BatchItem, RejectedInput
from service.batch.writer import all_exist, atomic_write, output_paths
from service.engine import Engine
from service.engine.config import BATCH_QUEUE_SIZE, usable_cores
from service.errors import ImageError, ModelError
from service.formats.raster import DEFAULT_ALPHA, check_alpha
from service.formats.registry import get_encoder
from service.formats.report import class_pixel_counts
from service.formats.shapes import DEFAULT_TOLERANCE, check_tolerance
from service.geo.crs import DEFAULT_CRS, check_crs_choice
from service.georef import GeoReference

logger = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class ItemResult:
    """What happened to one input.

    Attributes:
        item: the input.
        status: ``ok``, ``failed`` or ``skipped`` (outputs already there, or not followed).
        outputs: files written.
        error: why it failed or was skipped; None on success.
        width, height: image size after EXIF orientation (None when not decoded).
        milliseconds: decode + infer + encode + write time of this image (not queue waits).
        fractions: fraction of the pixels in each class, in class order.
    """

    item: BatchItem
    status: str = OK
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    milliseconds: float = 0.0
    fractions: list[float] | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        formats: output format names from :data:`service.formats.registry.ENCODERS`.
        alpha: overlay colour weight in ``[0, 1]``.
        tolerance: polygon simplification in pixels (``polygons``, ``geojson``).
        model: the model's name, written into the JSON outputs.
        skip_existing: leave an image alone when all its outputs exist (resume).
        crs: ``geojson`` of a georeferenced image: ``"wgs84"`` (RFC 7946 longitude/latitude)
            or ``"native"`` (the image's CRS, named as GDAL reads it), as HTTP's ``crs=``.
        rescale: a fixed ``(MIN, MAX)`` for the bit-depth rule (``--rescale``; None: the
            default rule of :mod:`service.rescale`).
        workers: decode threads, and as many encode/write threads.
        concurrency: images in ONNX Runtime at once, sharing the session. Two streams with
            half the intra-op threads each keep the cores busy while the other stream
            normalises, takes the argmax or waits for its image (see the batch benchmark).
        queue_size: images in flight per stage (decoded, waiting to be written).
        worker_nice: added to the nice value of the decode/encode threads (Linux: per
            thread), so they take the CPU ONNX Runtime leaves idle instead of preempting its
            threads mid-operator (0 keeps them equal).
    """

    formats: tuple[str, ...] = ("index",)
    alpha: float = DEFAULT_ALPHA
    tolerance: float = DEFAULT_TOLERANCE
    model: str | None = None
    skip_existing: bool = False
    crs: str = DEFAULT_CRS
    rescale: tuple[float, float] | None = None
    workers: int = field(default_factory=lambda: min(4, usable_cores()))
    queue_size: int = BATCH_QUEUE_SIZE
    concurrency: int = 1
    worker_nice: int = 10

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("at least one output format is needed")
        for fmt in self.formats:
            get_encoder(fmt)
        check_alpha(self.alpha)  # before any image: an overlay would fail on every one
        check_tolerance(self.tolerance)
        check_crs_choice(self.crs)
        if not 0 <= self.worker_nice <= 19:
            raise ValueError(f"worker_nice must be in [0, 19], got {self.worker_nice}")
        for name in ("workers", "queue_size", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def needs(self) -> pipeline.Needs:
        """What the formats need beyond the mask (probabilities, GeoTIFF tags)."""
        return pipeline.Needs.of(self.formats)


@dataclass
class BatchCounts:
    """How many images ended in each status."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the user, from an exception raised while processing an image."""
    if isinstance(exc, ImageError | ModelError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, MemoryError):
        return "out of memory; the image is too large for this machine"
    logger.debug("unexpected failure", exc_info=exc)
    return f"internal error ({type(exc).__name__}: {exc})"


# --- the three stages -------------------------------------------------------------------------


@dataclass
class _Decoded:
    pixels: np.ndarray | None  # None: skipped, outputs already there
    decode_ms: float
    georef: GeoReference | None = None
    notes: InputNotes | None = None  # nodata and warnings, as on HTTP


def _decode(
    engine: Engine, item: BatchItem, targets: list[Path], options: BatchOptions
) -> _Decoded:
    if options.skip_existing and all_exist(targets):
        return _Decoded(None, 0.0)
    with collect_notes() as notes:
        pixels, ms = pipeline.decode(engine, item.source, rescale=options.rescale)
    return _Decoded(pixels, ms, pipeline.georeference(item.source, options.needs), notes)


def _write(
    engine: Engine,
    result: ItemResult,
    segmentation: pipeline.Segmentation,
    targets: dict[str, Path],
    options: BatchOptions,
) -> ItemResult:
    """Encode every format, write it atomically, and fill in ``result``."""
    start = time.perf_counter()
    try:
        info = {"source": str(result.item.source), "arch": engine.metadata.arch}
        if options.model is not None:
            info = {"model": options.model, **info}
        mask = segmentation.mask
        counts = class_pixel_counts(mask, engine.metadata.num_classes)  # the JSON's too
        for fmt, target in targets.items():
            data = pipeline.encode(
                engine,
                segmentation,
                fmt,
                alpha=options.alpha,
                info=info,
                tolerance=options.tolerance,
                counts=counts,
                crs=options.crs,
            )
            atomic_write(target, data)
            result.outputs.append(target)
        result.fractions = (counts / mask.size).tolist()
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
    encode_ms = (time.perf_counter() - start) * 1000.0
    result.milliseconds = segmentation.decode_ms + segmentation.infer_ms + encode_ms
    return result


def _infer(
    engine: Engine, result: ItemResult, decoded: _Decoded, needs: pipeline.Needs
) -> pipeline.Segmentation | None:
    """Run the model; on failure mark ``result`` and return None."""
    try:
        segmentation = pipeline.infer(
            engine, decoded.pixels, decoded.decode_ms, needs=needs, georef=decoded.georef
        )
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
        result.milliseconds = decoded.decode_ms
        return None
    result.height, result.width = segmentation.height, segmentation.width
    if decoded.notes is not None:
        segmentation = pipeline.with_notes(segmentation, decoded.notes)
    return segmentation


def process_item(
    engine: Engine, item: BatchItem, out_dir: str | os.PathLike, options: BatchOptions
) -> ItemResult:
    """Decode, segment and write one image in sequence; any failure is captured."""
    targets = output_paths(item, Path(out_dir), options.formats)
    result = ItemResult(item)
    try:
        decoded = _decode(engine, item, list(targets.values()), options)
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
        return result
    if decoded.pixels is None:
        result.status, result.error = SKIPPED, "outputs already exist"
        return result
    segmentation = _infer(engine, result, decoded, options.needs)
    if segmentation is None:
        return result
    return _write(engine, result, segmentation, targets, options)


# --- the pipelined runner ---------------------------------------------------------------------


def _lower_priority(increment: int) -> None:
    """Raise this thread's nice value (a pool initializer; Linux nice is per thread).

    ONNX Runtime splits each operator over all its threads and waits for the slowest: a decode
    thread preempting one of them stalls every core. Niced workers run in the gaps instead.
    """
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:  # not permitted or not per-thread here: run at the normal priority
        logger.debug("cannot lower the priority of %s", threading.current_thread().name)


def _infer_job(
    engine: Engine, item: BatchItem, decoding: Future[_Decoded], needs: pipeline.Needs
) -> tuple[ItemResult, pipeline.Segmentation | None]:
    """Wait for the image's decode, then run the model (an inference thread)."""
    result = ItemResult(item)
    try:
        decoded = decoding.result()
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
        return result, None
    if decoded.pixels is None:
        result.status, result.error = SKIPPED, "outputs already exist"
        return result, None
    return result, _infer(engine, result, decoded, needs)


def _write_job(
    engine: Engine,
    inferring: Future[tuple[ItemResult, pipeline.Segmentation | None]],
    targets: dict[str, Path],
    options: BatchOptions,
) -> ItemResult:
    """Wait for the image's inference, then encode and write it (a writer thread)."""
    result, segmentation = inferring.result()
    if segmentation is None:
        return result
    return _write(engine, result, segmentation, targets, options)


def run_batch(
    engine: Engine,
    items: Iterable[BatchItem],
    out_dir: str | os.PathLike,
    options: BatchOptions | None = None,
    *,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchCounts:
    """Process every item; ``on_result`` is called on this thread, in input order.

    Each image is a chain of three tasks — decode, infer, write — on three thread pools whose
    tasks only wait on the stage before, in submission order, so the chains cannot deadlock.
    At most ``2 * queue_size + concurrency`` images are in flight at once.

    Returns:
        How many images succeeded, failed and were skipped.
    """
    options = options or BatchOptions()
    needs = options.needs
    out_dir = Path(out_dir)
    counts = BatchCounts()
    window = 2 * options.queue_size + options.concurrency
    niced = {"initializer": _lower_priority, "initargs": (options.worker_nice,)}
    decoders = ThreadPoolExecutor(options.workers, thread_name_prefix="fcn-decode", **niced)
    inferers = ThreadPoolExecutor(options.concurrency, thread_name_prefix="fcn-infer")
    writers = ThreadPoolExecutor(options.workers, thread_name_prefix="fcn-write", **niced)
    in_flight: deque[Future[ItemResult]] = deque()

    def emit_oldest() -> None:
        result = in_flight.popleft().result()
        counts.add(result.status)
        if on_result is not None:
            on_result(result)

    try:
        for item in items:
            while len(in_flight) >= window or (in_flight and in_flight[0].done()):
                emit_oldest()  # oldest first: results in input order, memory bounded
            targets = output_paths(item, out_dir, options.formats)
            decoding = decoders.submit(_decode, engine, item, list(targets.values()), options)
            inferring = inferers.submit(_infer_job, engine, item, decoding, needs)
            in_flight.append(writers.submit(_write_job, engine, inferring, targets, options))
        while in_flight:
            emit_oldest()
    finally:
        for pool in (decoders, inferers, writers):
            pool.shutdown(wait=True, cancel_futures=True)
    return counts


def rejected_results(rejected: Sequence[RejectedInput]) -> list[ItemResult]:
    """Result rows for the inputs a scan rejected (missing, collision, outside symlink)."""
    return [
        ItemResult(
            BatchItem(r.source, Path(r.source.stem)),
            status=FAILED if r.failed else SKIPPED,
            error=r.reason,
        )
        for r in rejected
    ]
