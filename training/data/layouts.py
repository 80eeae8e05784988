"""Find image/mask pairs on disk and split them into train and validation sets.

Three layouts (see ``training/data/datasets.py`` for the public API):

* ``folder``: ``ROOT/images/*`` + ``ROOT/masks/*`` matched by file stem, split by a seeded
  validation fraction;
* ``split``: ``ROOT/train/{images,masks}`` + ``ROOT/val/{images,masks}``, already split;
* ``voc``: a Pascal VOC 2012 tree (``VOCdevkit``, ``VOC2012`` or a folder holding
  ``VOCdevkit``) with ``ImageSets/Segmentation/{train,val}.txt``.

A ``dataset.json`` next to ``images/`` (``{"classes": [...], "palette": [[r, g, b], ...]}``,
optionally ``"mask_values"``) supplies defaults for the folder layouts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from service.imaging import IMAGE_EXTENSIONS
from training.config import LAYOUTS

logger = logging.getLogger(__name__)


VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class Pair(NamedTuple):
    """One training example on disk."""

    image: Path
    mask: Path

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass
class Found:
    """What a layout yields: the split pairs plus any defaults the dataset declares."""

    layout: str
    train: list[Pair]
    val: list[Pair]
    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    mask_values: list[int] | None = None


def class_palette(num_classes: int) -> list[list[int]]:
    """The Pascal VOC colour map: distinct, stable colours for class indices 0..N-1.

    Each index's bits are spread over the high bits of R, G and B, so neighbouring
    indices get clearly different colours and index 0 is black.
    """
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette.append([r, g, b])
    return palette


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def _image_files(folder: Path) -> dict[str, Path]:
    """Map stem -> path for the supported image files in ``folder`` (hidden files skipped)."""
    if not folder.is_dir():
        raise ValueError(f"expected a folder of images at {folder}, but it does not exist")
    files: dict[str, Path] = {}
    clashes: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in files:
            clashes.append(f"{files[path.stem].name}/{path.name}")
        files[path.stem] = path
    if clashes:
        raise ValueError(
            f"{folder}: several files share a name and cannot be matched by stem: {_few(clashes)}"
        )
    return files


def match_pairs(images_dir: Path, masks_dir: Path) -> list[Pair]:
    """Pair ``images_dir/*`` with ``masks_dir/*`` by file stem, sorted by stem.

    Raises:
        ValueError: a folder is missing or empty, or some files have no partner (a few are
            named).
    """
    images, masks = _image_files(images_dir), _image_files(masks_dir)
    lonely_images = sorted(images.keys() - masks.keys())
    lonely_masks = sorted(masks.keys() - images.keys())
    problems = []
    if lonely_images:
        names = [images[s].name for s in lonely_images]
        problems.append(f"{len(names)} image(s) have no mask in {masks_dir}: {_few(names)}")
    if lonely_masks:
        names = [masks[s].name for s in lonely_masks]
        problems.append(f"{len(names)} mask(s) have no image in {images_dir}: {_few(names)}")
    if problems:
        raise ValueError("; ".join(problems) + ". Masks must have the same file stem as images.")
    if not images:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"no images ({exts}) found in {images_dir}")
    return [Pair(images[s], masks[s]) for s in sorted(images)]


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split pairs deterministically into (train, val).

    Pairs are ranked by a hash of ``(seed, stem)``, so the split does not depend on listing
    order and adding files moves few existing ones between the sets.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(pairs) * val_fraction)
    if val_fraction > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)  # both sets non-empty
    ranked = sorted(pairs, key=lambda p: hashlib.blake2b(f"{seed}:{p.stem}".encode()).digest())
    val = sorted(ranked[:n_val], key=lambda p: p.stem)
    train = sorted(ranked[n_val:], key=lambda p: p.stem)
    return train, val


def read_dataset_json(root: Path) -> dict:
    """Return the contents of ``root/dataset.json``, or ``{}`` when there is none."""
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object with 'classes' and 'palette'")
    return meta


def _voc_dir(root: Path) -> Path | None:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    return None


def _voc_list(voc: Path, name: str) -> list[Pair]:
    list_file = voc / "ImageSets" / "Segmentation" / f"{name}.txt"
    if not list_file.is_file():
        raise ValueError(f"Pascal VOC split file {list_file} is missing")
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    pairs = [
        Pair(voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png") for i in ids
    ]
    missing = [
        path.name for pair in pairs for path in (pair.image, pair.mask) if not path.is_file()
    ]
    if missing:
        raise ValueError(f"{list_file} lists {len(missing)} id(s) without files: {_few(missing)}")
    return pairs


def detect_layout(root: Path) -> str | None:
    """The layout of the dataset under ``root`` (``voc``, ``split`` or ``folder``), or None
    when ``root`` holds none of them."""
    root = Path(root)
    if _voc_dir(root) is not None:
        return "voc"
    if (root / "train" / "images").is_dir():
        return "split"
    if (root / "images").is_dir():
        return "folder"
    return None


def find_layout(root: Path, layout: str, val_fraction: float, seed: int) -> Found:
    """Locate the dataset under ``root`` and return its train/val pairs and declared defaults.

    Raises:
        ValueError: unknown layout, nothing recognisable under ``root``, or pairing problems.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
        if layout is None:
            raise ValueError(
                f"no dataset found in {root}: expected images/ + masks/, train/ and val/ each "
                "with images/ + masks/, or a Pascal VOC tree (JPEGImages, SegmentationClass)"
            )
    if layout == "voc":
        voc = _voc_dir(root)
        if voc is None:
            raise ValueError(f"{root} is not a Pascal VOC tree (no JPEGImages + SegmentationClass)")
        return Found(
            "voc",
            _voc_list(voc, "train"),
            _voc_list(voc, "val"),
            classes=list(VOC_CLASSES),
            palette=class_palette(len(VOC_CLASSES)),
        )
    meta = read_dataset_json(root)
    if layout == "split":
        train = match_pairs(root / "train" / "images", root / "train" / "masks")
        val = match_pairs(root / "val" / "images", root / "val" / "masks")
    else:
        train, val = split_pairs(match_pairs(root / "images", root / "masks"), val_fraction, seed)
    return Found(
        layout,
        train,
        val,
        classes=meta.get("classes"),
        palette=meta.get("palette"),
        mask_values=meta.get("mask_values"),
    )
