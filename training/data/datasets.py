"""Segmentation datasets: find pairs, decode, map mask values, split, augment.

Public API (used by the training loop, evaluation and the prediction grid)::

    cfg = DataConfig(root="data/isbi", mask_values=[0, 255], classes=["membrane", "interior"],
                     augment=AugmentConfig(crop_size=256))
    train_ds, val_ds, info = build_datasets(cfg)            # split="trainval"
    _, all_ds, info = build_datasets(cfg, split="all")      # evaluate every image
    loader = DataLoader(val_ds, batch_size=4,
                        collate_fn=functools.partial(pad_collate, ignore_index=info.ignore_index))
    val_files = list_pairs(cfg, split="val")                # [Pair(image=Path, mask=Path), ...]

* ``DataConfig`` (``training.config``, no torch): where the data is and how to read it
  (layout, split, mask values, classes, normalisation, augmentation). ``to_dict()`` /
  ``from_dict()`` round-trip through JSON.
* ``build_datasets(cfg, split)`` -> ``(train_ds | None, eval_ds, DatasetInfo)``. ``split`` is
  ``"trainval"`` (train with augmentation + val), or ``"train"``, ``"val"``, ``"all"`` (then
  the first item is ``None`` and the second is that subset, not augmented).
* Items are ``(image float32 (C, H, W) normalised, mask int64 (H, W))``; training items are
  ``crop_size`` squares, validation items full-size (the model pads itself; batches of mixed
  sizes need ``pad_collate``, which pads images with 0 and masks with ``ignore_index``).
* ``DatasetInfo``: ``num_classes, classes, palette, in_channels, mean, std, ignore_index,
  mask_values, layout`` - what the checkpoint config and ONNX metadata need.

To evaluate a trained model, rebuild the ``DataConfig`` from its checkpoint's
``config["data"]`` (which holds what was inferred: ``mean``, ``std``, ``in_channels``,
``classes``, ``mask_values``) so the data is read exactly as in training.

Layouts and defaults: see ``training/data/layouts.py``. Decoding: ``training/data/decoding.py``.
Loaders for the training loop: ``training/loop/sampling.py``.
Small datasets (under ``cache_mb``) are decoded once, up front, and kept in memory as
``uint8``/``uint16`` arrays; each DataLoader worker holds a copy (workers start from a
forkserver: see ``training.loop.sampling.worker_context``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from service.imaging import pixel_scale
from training.config import IN_CHANNELS, DataConfig, OptionError
from training.data.decoding import (
    MaskMapper,
    mode_channels,
    present_values,
    read_header,
    read_image,
    read_mask,
)
from training.data.layouts import Found, Pair, class_palette, find_layout
from training.data.transforms import EvalTransform, TrainTransform, default_mean_std

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("trainval", "train", "val", "all")
_THREADS = 4  # PIL releases the GIL while decoding


@dataclass
class DatasetInfo:
    """What a model trained on this data needs to know about it."""

    num_classes: int
    classes: list[str]
    palette: list[list[int]]
    in_channels: int
    mean: list[float]
    std: list[float]
    ignore_index: int
    mask_values: list[int] | None = None
    layout: str = "folder"


class SegmentationDataset(Dataset):
    """Image/mask pairs -> ``(image (C, H, W) float32, mask (H, W) int64)`` via a transform."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        in_channels: int,
        mapper: MaskMapper,
        transform: TrainTransform | EvalTransform,
        cache: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.in_channels = in_channels
        self.mapper = mapper
        self.transform = transform
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._points: dict[int, list[np.ndarray]] = {}
        if cache and self.pairs:
            with ThreadPoolExecutor(_THREADS) as pool:
                self._cache = list(pool.map(self._decode, self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def _decode(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(pair.image, self.in_channels)
        mask = self.mapper(read_mask(pair.mask), pair.mask)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"image {pair.image} is {image.shape[1]}x{image.shape[0]} but mask {pair.mask} "
                f"is {mask.shape[1]}x{mask.shape[0]}; they must match"
            )
        return image, mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded ``(H, W, C)`` image and ``(H, W)`` class-index mask, before transforms."""
        if self._cache is not None:
            return self._cache[index]
        return self._decode(self.pairs[index])

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of item ``index`` as decoded (from the header when not cached)."""
        if self._cache is not None:
            return self._cache[index][1].shape[:2]
        return read_header(self.pairs[index].image)[0]

    def class_points(self, index: int, mask: np.ndarray) -> list[np.ndarray]:
        """Sample pixels of each class in ``mask`` (item ``index``'s): see ``class_points``.

        Kept per item when the dataset is cached in memory, computed again otherwise.
        """
        points = self._points.get(index)
        if points is None:
            points = class_points(mask, self.mapper.num_classes, seed=index)
            if self._cache is not None:
                self._points[index] = points
        return points

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(*self.load(index))
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))


def class_points(
    mask: np.ndarray, num_classes: int, *, per_class: int = 256, seed: int = 0
) -> list[np.ndarray]:
    """Up to ``per_class`` random pixels ``(y, x)`` (int32 ``(n, 2)``) of each class 0..K-1.

    Large masks are looked at on a grid of at most ~256k points (a crop centre needs no more
    precision); a class absent from the mask gets an empty array.
    """
    stride = max(1, int(np.sqrt(mask.size / 262_144)))
    grid = mask[::stride, ::stride]
    rng = np.random.default_rng(seed)
    points = []
    for value in range(num_classes):
        ys, xs = np.nonzero(grid == value)
        if len(ys) > per_class:
            keep = rng.choice(len(ys), per_class, replace=False)
            ys, xs = ys[keep], xs[keep]
        points.append(np.stack([ys, xs], axis=1).astype(np.int32) * stride)
    return points


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items of different sizes: pad bottom/right, images with 0, masks with ignore.

    Use ``functools.partial(pad_collate, ignore_index=info.ignore_index)`` as ``collate_fn``.
    """
    images, masks = zip(*batch, strict=True)
    height = max(m.shape[-2] for m in masks)
    width = max(m.shape[-1] for m in masks)
    if all(m.shape[-2:] == (height, width) for m in masks):
        return torch.stack(images), torch.stack(masks)
    out_images = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out_masks = masks[0].new_full((len(masks), height, width), ignore_index)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        out_images[i, :, : image.shape[1], : image.shape[2]] = image
        out_masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return out_images, out_masks


def _select(found: Found, split: str) -> list[Pair]:
    if split == "train":
        return found.train
    if split == "val":
        return found.val
    return sorted([*found.train, *found.val], key=lambda p: str(p.image))


def list_pairs(cfg: DataConfig, split: str = "val") -> list[Pair]:
    """The files of one subset (``train``, ``val`` or ``all``), in a stable order."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    return _select(find_layout(Path(cfg.root), cfg.layout, cfg.val_fraction, cfg.seed), split)


def _check_sizes(pairs: list[Pair]) -> tuple[dict[Path, str], int]:
    """Compare image and mask sizes from headers; return each image's mode and decoded bytes."""
    with ThreadPoolExecutor(_THREADS) as pool:
        heads = list(pool.map(lambda p: (read_header(p.image), read_header(p.mask)), pairs))
    bad = [
        f"{p.image.name} {i[0][1]}x{i[0][0]} vs {p.mask.name} {m[0][1]}x{m[0][0]}"
        for p, (i, m) in zip(pairs, heads, strict=True)
        if i[0] != m[0]
    ]
    if bad:
        shown = "; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise ValueError(f"{len(bad)} image/mask pair(s) differ in size: {shown}")
    nbytes = sum(h * w * (2 * mode_channels(mode) + 1) for ((h, w), mode), _ in heads)
    return {p.image: mode for p, ((_, mode), _) in zip(pairs, heads, strict=True)}, nbytes


def _resolve_classes(
    cfg: DataConfig, found: Found, pairs: list[Pair]
) -> tuple[list[str], list[int] | None]:
    """Class names and mask values from the config, then the dataset's defaults, then the masks."""
    mask_values = cfg.mask_values if cfg.mask_values is not None else found.mask_values
    classes = cfg.classes or found.classes
    if mask_values is not None:
        mask_values = [int(v) for v in mask_values]
        if len(set(mask_values)) != len(mask_values) or not all(
            0 <= v < 65536 for v in mask_values
        ):
            raise ValueError(
                f"mask_values must be distinct integers in 0..65535, got {mask_values}"
            )
        # A declared value wins over ignore_index (binary 0/255 masks with the default 255):
        # then no raw value is ignored, and ignore_index only marks padding.
        count = len(mask_values)
    elif classes:
        count = len(classes)
    elif cfg.num_classes:
        count = cfg.num_classes
    else:
        with ThreadPoolExecutor(_THREADS) as pool:
            seen = set().union(
                *pool.map(lambda p: set(present_values(read_mask(p.mask)).tolist()), pairs)
            )
        values = sorted(seen - {cfg.ignore_index})
        if len(values) < 2 or values != list(range(len(values))):
            raise OptionError(
                f"masks hold the values {sorted(seen)[:12]} (ignore_index {cfg.ignore_index}), not "
                f"class indices 0..K-1 of 2+ classes. Declare them: mask_values "
                f"{','.join(map(str, sorted(seen)[:12]))} maps them to classes 0..N-1 "
                "(or give classes / num_classes if they are indices)",
                options=("mask_values", "classes", "num_classes"),
            )
        count = len(values)
        logger.info("masks hold class indices 0..%d: %d classes", count - 1, count)
    if cfg.num_classes and cfg.num_classes != count:
        raise ValueError(
            f"num_classes is {cfg.num_classes} but the classes/mask values give {count}"
        )
    if classes and len(classes) != count:
        raise ValueError(f"{len(classes)} class names {classes} for {count} classes")
    return list(classes) if classes else [f"class_{i}" for i in range(count)], mask_values


def _compute_mean_std(
    dataset: SegmentationDataset, limit: int = 256
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in ``[0, 1]`` units over (up to ``limit``) training images."""
    total = np.zeros(dataset.in_channels)
    squares = np.zeros(dataset.in_channels)
    count = 0
    for index in np.linspace(0, len(dataset) - 1, min(limit, len(dataset))).astype(int):
        image, _ = dataset.load(int(index))
        pixels = image.reshape(-1, image.shape[2]).astype(np.float64) * pixel_scale(image)
        total += pixels.sum(0)
        squares += (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return mean.round(6).tolist(), np.maximum(std, 1e-3).round(6).tolist()


def build_datasets(
    cfg: DataConfig, split: str = "trainval"
) -> tuple[SegmentationDataset | None, SegmentationDataset, DatasetInfo]:
    """Build the datasets of ``cfg`` and describe them.

    Args:
        cfg: the data options.
        split: ``"trainval"`` -> (augmented train set, val set); ``"train"``, ``"val"`` or
            ``"all"`` -> (None, that subset without augmentation).

    Returns:
        ``(train_ds or None, eval_ds, info)``.

    Raises:
        ValueError: layout, pairing, size, mode or mask-value problems, naming the files.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    found = find_layout(Path(cfg.root), cfg.layout, cfg.val_fraction, cfg.seed)
    pairs = _select(found, "all")
    modes, nbytes = _check_sizes(pairs)
    first = (found.train or pairs)[0].image
    in_channels = cfg.in_channels or mode_channels(modes[first])
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"in_channels must be 1, 3 or 4, got {in_channels}")
    others = sum(mode_channels(m) != in_channels for m in modes.values())
    if others:
        logger.info(
            "%d image(s) converted to %d channel(s) to match the first", others, in_channels
        )
    classes, mask_values = _resolve_classes(cfg, found, pairs)
    palette = cfg.palette or found.palette
    if not palette or len(palette) != len(classes):
        palette = class_palette(len(classes))
    mapper = MaskMapper(len(classes), mask_values, cfg.ignore_index)
    cache = nbytes <= cfg.cache_mb * 2**20
    mean, std = cfg.mean, cfg.std
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")

    def make(subset: list[Pair], transform: Any) -> SegmentationDataset:
        return SegmentationDataset(
            subset, in_channels=in_channels, mapper=mapper, transform=transform, cache=cache
        )

    placeholder = EvalTransform(mean=[0.0] * in_channels, std=[1.0] * in_channels)
    train_ds = make(found.train, placeholder) if split in ("trainval", "train") else None
    if mean is None:
        if cfg.compute_stats and found.train:
            # Always from the training images, so evaluating "val"/"all" matches training.
            stats_ds = train_ds or make(found.train, placeholder)
            mean, std = _compute_mean_std(stats_ds)
            logger.info("mean %s std %s from %d training images", mean, std, len(stats_ds))
        else:
            mean, std = default_mean_std(in_channels)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values (one per channel), got {mean}/{std}")
    evaluate = EvalTransform(mean=mean, std=std)
    if split == "trainval":
        train_ds.transform = TrainTransform(
            cfg.augment, mean=mean, std=std, ignore_index=cfg.ignore_index, seed=cfg.seed
        )
        eval_ds = make(found.val, evaluate)
    else:
        eval_ds = train_ds if split == "train" else make(_select(found, split), evaluate)
        eval_ds.transform = evaluate
        train_ds = None
    info = DatasetInfo(
        num_classes=len(classes),
        classes=classes,
        palette=[list(map(int, c)) for c in palette],
        in_channels=in_channels,
        mean=list(mean),
        std=list(std),
        ignore_index=cfg.ignore_index,
        mask_values=mask_values,
        layout=found.layout,
    )
    logger.info(
        "%s (%s): %d train / %d val pairs, %d classes, %d channel(s)%s",
        cfg.root,
        found.layout,
        len(found.train),
        len(found.val),
        info.num_classes,
        in_channels,
        f", {nbytes / 2**20:.1f} MB cached in memory" if cache else "",
    )
    return train_ds, eval_ds, info
