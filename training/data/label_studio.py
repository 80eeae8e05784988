"""``fcn data import-label-studio``: a Label Studio JSON export -> ``images/`` + ``masks/`` +
``dataset.json``, the folder layout ``fcn train`` reads.

Per task, the most recent annotation that was not cancelled is used (tasks without one are
skipped and counted). Its brush regions (Label Studio's brush RLE) and polygons are painted in
order, later over earlier, as the editor shows them; pixels no region covers get the ignore
index (255 by default, which ``fcn train`` leaves out of the loss). Images are copied unchanged:
read from ``--images`` (matched by file name) or fetched from Label Studio with its token
(:mod:`service.labeling.fetch`, the same rules as the ML backend).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from service.imaging import IMAGE_EXTENSIONS
from service.labeling.fetch import FetchError, ImageFetcher
from service.labeling.label_studio import BRUSH, POLYGON, LabelStudioError, annotation_mask

logger = logging.getLogger(__name__)

# Label Studio prefixes uploaded files with 8 hex digits and a dash: "1a2b3c4d-photo.jpg".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
MAX_IMAGE_BYTES = 512 * 1024 * 1024


class LabelStudioImportError(ValueError):
    """The export cannot be imported as asked; the message says what to change."""


@dataclass
class ImportReport:
    written: list[str] = field(default_factory=list)
    skipped: dict[str, list] = field(default_factory=dict)

    def skip(self, reason: str, task: object) -> None:
        self.skipped.setdefault(reason, []).append(task)

    def summary(self) -> str:
        parts = [f"{len(self.written)} image/mask pair(s) written"]
        parts += [f"{len(v)} task(s) skipped: {reason}" for reason, v in self.skipped.items()]
        return "; ".join(parts)


def _latest_annotation(task: dict) -> dict | None:
    annotations = [
        a
        for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))


def _image_url(task: dict, key: str | None) -> str:
    data = task.get("data") or {}
    if key is not None:
        if key not in data:
            raise LabelStudioImportError(f"task {task.get('id')} has no data.{key}")
        return str(data[key])
    urls = [v for v in data.values() if isinstance(v, str) and ("/" in v or "." in v)]
    if len(urls) != 1:
        raise LabelStudioImportError(
            f"task {task.get('id')}: cannot tell which data field is the image "
            f"({', '.join(data) or 'no fields'}); pass --image-key"
        )
    return urls[0]


def _file_name(url: str) -> str:
    """The image's file name as the user uploaded it."""
    parts = urlsplit(url)
    name = Path(unquote(parts.path)).name
    if parts.path.rstrip("/").endswith("/data/local-files"):  # /data/local-files/?d=dir/a.jpg
        name = Path(parse_qs(parts.query).get("d", [""])[0]).name
    return _UPLOAD_PREFIX.sub("", name)


def _classes_from(tasks: Sequence[dict], classes: Sequence[str] | None) -> tuple[list[str], bool]:
    if classes:
        return list(classes), False
    found = set()
    for task in tasks:
        annotation = _latest_annotation(task)
        for result in (annotation or {}).get("result") or []:
            kind = str(result.get("type", "")).lower()
            if kind in (BRUSH, POLYGON):
                found.update((result.get("value") or {}).get(kind) or [])
    return sorted(found), True


def import_export(
    export: Path,
    out: Path,
    *,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    images: Path | None = None,
    fetcher: ImageFetcher | None = None,
    image_key: str | None = None,
    ignore_index: int = 255,
) -> ImportReport:
    """Write ``out/images``, ``out/masks`` and ``out/dataset.json`` from a Label Studio export.

    Args:
        export: the JSON export (a list of tasks) Label Studio wrote.
        out: a new or empty folder.
        classes: class names in index order; default: every label used, sorted by name.
        palette: one ``[r, g, b]`` per class (default: the VOC colour map).
        images: a folder holding the task images (matched by file name), or None to fetch.
        fetcher: reads task image URLs when ``images`` is None.
        image_key: the task data field with the image (default: the only URL-like one).
        ignore_index: the value of pixels no region covers.

    Raises:
        LabelStudioImportError: bad export, unknown labels, a missing image, or sizes that disagree.
    """
    from training.data.layouts import class_palette

    tasks = _load_tasks(export)
    if out.exists() and any(out.iterdir()):
        raise LabelStudioImportError(f"{out} is not empty; choose a new output folder")
    names = _checked_classes(tasks, classes, ignore_index)
    colours = [list(c) for c in (palette or class_palette(len(names)))]
    if len(colours) < len(names):
        raise LabelStudioImportError(f"{len(colours)} palette colours for {len(names)} classes")
    if images is None and fetcher is None:
        raise LabelStudioImportError(
            "give --images DIR or --label-studio-url to read the task images from"
        )
    report = ImportReport()
    pairs = _painted_pairs(tasks, names, report, images, fetcher, image_key, ignore_index)
    _write_dataset(out, pairs, names, colours[: len(names)], ignore_index, export.name, report)
    return report


def _load_tasks(export: Path) -> list[dict]:
    """The export's tasks (a single task object counts as a list of one)."""
    try:
        tasks = json.loads(export.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelStudioImportError(
            f"cannot read {export} as a Label Studio JSON export: {exc}"
        ) from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise LabelStudioImportError(
            f"{export} is not a Label Studio JSON export (a list of tasks)"
        )
    return tasks


def _checked_classes(
    tasks: Sequence[dict], classes: Sequence[str] | None, ignore_index: int
) -> list[str]:
    """The class names in index order, checked to fit a mask beside ``ignore_index``."""
    names, guessed = _classes_from(tasks, classes)
    if not names:
        raise LabelStudioImportError("the export has no brush or polygon annotations to import")
    if len(names) > 255:
        raise LabelStudioImportError(f"{len(names)} classes: masks hold at most 255")
    if not len(names) <= ignore_index <= 255:
        raise LabelStudioImportError(
            f"--ignore-index {ignore_index} must be in {len(names)}..255 (not a class index)"
        )
    if guessed:
        logger.warning("classes not given: using the labels found, by name: %s", ", ".join(names))
    return names


def _painted_pairs(
    tasks: Sequence[dict],
    names: list[str],
    report: ImportReport,
    images: Path | None,
    fetcher: ImageFetcher | None,
    image_key: str | None,
    ignore_index: int,
) -> list[tuple[str, bytes, np.ndarray]]:
    """(file name, image bytes, index mask) per annotated task; nothing is written yet.

    Labels that are not among ``names`` are collected over every task and reported in one
    error, so a user fixes ``--classes`` once rather than once per task.
    """
    index = {name: i for i, name in enumerate(names)}
    pairs: list[tuple[str, bytes, np.ndarray]] = []
    unknown: dict[str, list] = {}
    used: set[str] = set()
    for number, task in enumerate(tasks):
        task_id = task.get("id", number)
        annotation = _latest_annotation(task)
        if annotation is None:
            report.skip("no annotation (or only cancelled ones)", task_id)
            continue
        url = _image_url(task, image_key)
        data = _read_image(url, images, fetcher, task_id)
        try:
            with Image.open(io.BytesIO(data)) as opened:
                size, image_format = opened.size, opened.format or "png"
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise LabelStudioImportError(
                f"task {task_id}: {url} is not a readable image: {exc}"
            ) from None
        try:
            mask, missing = annotation_mask(
                annotation.get("result") or [], index, ignore_index, size
            )
        except LabelStudioError as exc:
            raise LabelStudioImportError(f"task {task_id}: {exc}") from None
        for label in missing:
            unknown.setdefault(label, []).append(task_id)
        stem = Path(_file_name(url)).stem or f"task-{task_id}"
        if stem in used:
            stem = f"{stem}-{task_id}"
        used.add(stem)
        suffix = Path(_file_name(url)).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            suffix = "." + image_format.lower()
        pairs.append((stem + suffix, data, mask))
    if unknown:
        listed = "; ".join(
            f"{label!r} (tasks {', '.join(map(str, ids[:5]))})" for label, ids in unknown.items()
        )
        raise LabelStudioImportError(
            f"labels not among the classes {', '.join(names)}: {listed}. Pass --classes with "
            "every label, in class-index order."
        )
    return pairs


def _write_dataset(
    out: Path,
    pairs: list[tuple[str, bytes, np.ndarray]],
    names: list[str],
    colours: list[list[int]],
    ignore_index: int,
    source: str,
    report: ImportReport,
) -> None:
    """``out/images``, ``out/masks`` (palette PNGs) and ``out/dataset.json``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    # A full 256-entry palette: with a short one Pillow may renumber the indices it writes.
    flat = [c for colour in colours for c in colour]
    flat += [255, 255, 255] * (256 - len(names))  # unlabelled pixels show white
    for name, data, mask in pairs:
        (out / "images" / name).write_bytes(data)
        png = Image.fromarray(mask)
        png.putpalette(flat)
        png.save(out / "masks" / (Path(name).stem + ".png"))
        report.written.append(name)
    meta = {
        "classes": names,
        "palette": colours,
        "ignore_index": ignore_index,
        "source": f"Label Studio export {source}",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def _read_image(url: str, images: Path | None, fetcher: ImageFetcher | None, task_id) -> bytes:
    if images is not None:
        name = _file_name(url)
        for candidate in (images / name, images / Path(urlsplit(url).path).name):
            if candidate.is_file():
                return candidate.read_bytes()
        raise LabelStudioImportError(f"task {task_id}: no {name} in {images}")
    assert fetcher is not None
    try:
        return fetcher.fetch(url)
    except FetchError as exc:
        raise LabelStudioImportError(f"task {task_id}: {exc.message}") from None
