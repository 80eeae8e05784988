"""Segment a list of images into an output folder, pipelined (the engine behind ``fcn predict``).

Three stages per image, the ones of :mod:`service.pipeline`: decode, infer, encode + write.
Decoding and encoding/writing run in worker threads while ONNX Runtime runs on the calling
thread (Pillow, zlib and ONNX Runtime all release the GIL), and each stage holds at most
``BatchOptions.queue_size`` images, so memory stays flat however many images there are.

Results come back in input order through ``on_result``, one :class:`ItemResult` per image: a
bad file never stops the batch, its result carries the reason. Outputs are written atomically
(:mod:`service.writer`), and ``skip_existing`` resumes a killed run.

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
from service.engine import Engine
from service.errors import ImageError, ModelError
from service.masks import get_encoder
from service.scan import BatchItem, Rejected
from service.writer import all_exist, atomic_write, output_paths

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
        formats: output format names from :data:`service.masks.ENCODERS`.
        alpha: overlay colour weight in ``[0, 1]``.
        skip_existing: leave an image alone when all its outputs exist (resume).
        workers: decode threads, and as many encode/write threads.
        queue_size: images in flight per stage (decoded, waiting to be written).
        worker_nice: added to the nice value of the decode/encode threads (Linux: per
            thread), so they take the CPU ONNX Runtime leaves idle instead of preempting its
            threads mid-operator (0 keeps them equal).
    """

    formats: tuple[str, ...] = ("index",)
    alpha: float = 0.5
    skip_existing: bool = False
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    queue_size: int = 4
    worker_nice: int = 10

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("at least one output format is needed")
        for fmt in self.formats:
            get_encoder(fmt)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0 <= self.worker_nice <= 19:
            raise ValueError(f"worker_nice must be in [0, 19], got {self.worker_nice}")
        if self.workers < 1 or self.queue_size < 1:
            raise ValueError(
                f"workers and queue_size must be >= 1, got {self.workers} and {self.queue_size}"
            )


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


def class_fractions(mask: np.ndarray, num_classes: int) -> list[float]:
    """Fraction of ``mask``'s pixels in each class ``0..num_classes-1``."""
    counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
    return [float(c) / mask.size for c in counts]


# --- the three stages -------------------------------------------------------------------------


@dataclass
class _Decoded:
    pixels: np.ndarray | None  # None: skipped, outputs already there
    decode_ms: float


def _decode(engine: Engine, item: BatchItem, targets: list[Path], skip: bool) -> _Decoded:
    if skip and all_exist(targets):
        return _Decoded(None, 0.0)
    pixels, ms = pipeline.decode(engine, item.source)
    return _Decoded(pixels, ms)


def _write(
    engine: Engine,
    result: ItemResult,
    segmentation: pipeline.Segmentation,
    targets: dict[str, Path],
    alpha: float,
) -> ItemResult:
    """Encode every format, write it atomically, and fill in ``result``."""
    start = time.perf_counter()
    try:
        info = {"source": str(result.item.source), "arch": engine.metadata.arch}
        for fmt, target in targets.items():
            atomic_write(target, pipeline.encode(engine, segmentation, fmt, alpha=alpha, info=info))
            result.outputs.append(target)
        result.fractions = class_fractions(segmentation.mask, engine.metadata.num_classes)
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
    encode_ms = (time.perf_counter() - start) * 1000.0
    result.milliseconds = segmentation.decode_ms + segmentation.infer_ms + encode_ms
    return result


def _infer(engine: Engine, result: ItemResult, decoded: _Decoded) -> pipeline.Segmentation | None:
    """Run the model; on failure mark ``result`` and return None."""
    try:
        segmentation = pipeline.infer(engine, decoded.pixels, decoded.decode_ms)
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
        result.milliseconds = decoded.decode_ms
        return None
    result.height, result.width = segmentation.height, segmentation.width
    return segmentation


def process_item(
    engine: Engine, item: BatchItem, out_dir: str | os.PathLike, options: BatchOptions
) -> ItemResult:
    """Decode, segment and write one image in sequence; any failure is captured."""
    targets = output_paths(item, Path(out_dir), options.formats)
    result = ItemResult(item)
    try:
        decoded = _decode(engine, item, list(targets.values()), options.skip_existing)
    except Exception as exc:
        result.status, result.error = FAILED, describe_error(exc)
        return result
    if decoded.pixels is None:
        result.status, result.error = SKIPPED, "outputs already exist"
        return result
    segmentation = _infer(engine, result, decoded)
    if segmentation is None:
        return result
    return _write(engine, result, segmentation, targets, options.alpha)


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


def run_batch(
    engine: Engine,
    items: Iterable[BatchItem],
    out_dir: str | os.PathLike,
    options: BatchOptions | None = None,
    *,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchCounts:
    """Process every item; ``on_result`` is called on this thread, in input order.

    Returns:
        How many images succeeded, failed and were skipped.
    """
    options = options or BatchOptions()
    out_dir = Path(out_dir)
    counts = BatchCounts()

    def emit(result: ItemResult) -> None:
        counts.add(result.status)
        if on_result is not None:
            on_result(result)

    pool = {"initializer": _lower_priority, "initargs": (options.worker_nice,)}
    decoders = ThreadPoolExecutor(options.workers, thread_name_prefix="fcn-decode", **pool)
    writers = ThreadPoolExecutor(options.workers, thread_name_prefix="fcn-write", **pool)
    decoding: deque[tuple[BatchItem, dict[str, Path], Future[_Decoded]]] = deque()
    writing: deque[Future[ItemResult]] = deque()
    pending = iter(items)

    def refill() -> None:
        while len(decoding) < options.queue_size:
            item = next(pending, None)
            if item is None:
                return
            targets = output_paths(item, out_dir, options.formats)
            future = decoders.submit(
                _decode, engine, item, list(targets.values()), options.skip_existing
            )
            decoding.append((item, targets, future))

    def drain(limit: int) -> None:
        # Oldest first keeps the results in input order; waiting on it bounds the queue.
        while writing and (len(writing) > limit or writing[0].done()):
            emit(writing.popleft().result())

    try:
        refill()
        while decoding:
            item, targets, future = decoding.popleft()
            refill()
            result = ItemResult(item)
            try:
                decoded = future.result()
            except Exception as exc:
                result.status, result.error = FAILED, describe_error(exc)
                writing.append(_done(result))
                drain(options.queue_size)
                continue
            if decoded.pixels is None:
                result.status, result.error = SKIPPED, "outputs already exist"
                writing.append(_done(result))
            else:
                segmentation = _infer(engine, result, decoded)
                del decoded
                if segmentation is None:
                    writing.append(_done(result))
                else:
                    writing.append(
                        writers.submit(_write, engine, result, segmentation, targets, options.alpha)
                    )
            drain(options.queue_size)
        drain(0)
    finally:
        for future in writing:
            future.cancel()
        for _, _, future in decoding:
            future.cancel()
        decoders.shutdown(wait=True)
        writers.shutdown(wait=True)
    return counts


def _done(result: ItemResult) -> Future[ItemResult]:
    future: Future[ItemResult] = Future()
    future.set_result(result)
    return future


def rejected_results(rejected: Sequence[Rejected]) -> list[ItemResult]:
    """Result rows for the inputs a scan rejected (missing, collision, outside symlink)."""
    return [
        ItemResult(
            BatchItem(r.source, Path(r.source.stem)),
            status=FAILED if r.failed else SKIPPED,
            error=r.reason,
        )
        for r in rejected
    ]
