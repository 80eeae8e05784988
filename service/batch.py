"""Segment files and folders into an output folder (the engine behind ``fcn predict``).

Output names are the input's stem plus a suffix per format (``cat.jpg`` -> ``cat_mask.png``,
``cat_color.png``, ``cat_overlay.png``, ``cat.json``); inputs found inside a folder keep their
sub-folder under the output folder. One bad file never stops the batch: its result carries
the reason and the caller decides how to report it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service import pipeline
from service.engine import Engine
from service.errors import ImageError, ModelError
from service.imaging import IMAGE_EXTENSIONS
from service.masks import get_encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One input: where it is, and its output stem relative to the output folder."""

    source: Path
    stem: Path


@dataclass
class ItemResult:
    """What happened to one input: ``error`` is None on success."""

    item: BatchItem
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    size: tuple[int, int] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def collect_inputs(
    paths: Iterable[str | Path], *, recursive: bool = False
) -> tuple[list[BatchItem], list[ItemResult]]:
    """Expand files and folders into batch items.

    Args:
        paths: files (always used) and folders (scanned for image extensions).
        recursive: also scan sub-folders, keeping their relative path in the output.

    Returns:
        ``(items, failures)``: failures are inputs that do not exist or collide on output name.
    """
    items: list[BatchItem] = []
    failures: list[ItemResult] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(
                p
                for p in path.glob(pattern)
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            items.extend(BatchItem(p, p.relative_to(path).with_suffix("")) for p in found)
        elif path.is_file():
            items.append(BatchItem(path, Path(path.stem)))
        else:
            failures.append(ItemResult(BatchItem(path, Path(path.stem)), error="no such file"))
    seen: dict[Path, Path] = {}
    unique: list[BatchItem] = []
    for item in items:
        if item.stem in seen:
            reason = f"output name {item.stem} already used by {seen[item.stem]}"
            failures.append(ItemResult(item, error=reason))
            continue
        seen[item.stem] = item.source
        unique.append(item)
    return unique, failures


def output_paths(item: BatchItem, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """The file each requested format is written to."""
    base = out_dir / item.stem
    return {fmt: base.with_name(base.name + get_encoder(fmt).suffix) for fmt in formats}


def process_item(
    engine: Engine, item: BatchItem, out_dir: Path, formats: Sequence[str], alpha: float = 0.5
) -> ItemResult:
    """Decode, segment and write one input; any failure is captured in the result."""
    result = ItemResult(item)
    start = time.perf_counter()
    try:
        segmentation = pipeline.segment(engine, item.source)
        result.size = (segmentation.height, segmentation.width)
        info = {"source": str(item.source), "arch": engine.metadata.arch}
        for fmt, target in output_paths(item, out_dir, formats).items():
            data = pipeline.encode(engine, segmentation, fmt, alpha=alpha, info=info)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            result.outputs.append(target)
    except (ImageError, ModelError) as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    except MemoryError:
        result.error = "out of memory; the image is too large for this machine"
    except Exception as exc:  # a batch must finish; the traceback goes to the debug log
        logger.debug("unexpected failure on %s", item.source, exc_info=True)
        result.error = f"internal error ({type(exc).__name__}: {exc})"
    result.seconds = time.perf_counter() - start
    return result


def run_batch(
    engine: Engine,
    items: Sequence[BatchItem],
    out_dir: str | Path,
    formats: Sequence[str] = ("index",),
    *,
    alpha: float = 0.5,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Process every item in order, calling ``on_result`` after each one.

    Raises:
        ValueError: an unknown format name.
    """
    for fmt in formats:
        get_encoder(fmt)
    out_dir = Path(out_dir)
    results = []
    for item in items:
        result = process_item(engine, item, out_dir, formats, alpha)
        if result.ok:
            logger.debug(
                "%s -> %d outputs in %.2fs", item.source, len(result.outputs), result.seconds
            )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
