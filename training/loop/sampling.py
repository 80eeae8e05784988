"""Data loaders whose order and augmentation depend only on ``(seed, epoch)``.

Exact ``--resume`` needs epoch ``e`` to see the same images with the same random crops and
flips whether the run started at epoch 0 or resumed at ``e``, with any number of DataLoader
workers (persistent or not) and any number of ranks. So the sampler (which runs in the main
process) draws, per epoch, a shuffled order *and one augmentation seed per sample* from a
generator seeded by ``(seed, epoch)``; the dataset reseeds the albumentations pipeline with
that seed before transforming the item. Nothing depends on worker random state.

The sampler also does ``DistributedSampler``'s job: it shards the epoch across ranks
(``order[rank::world_size]``) after padding it to equal full batches, so every rank runs the
same number of steps. Validation uses ``SizeBatches`` instead: no padding and no repeats,
so the all-reduced confusion matrix counts every pixel exactly once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from training.data.datasets import SegmentationDataset, pad_collate
from training.loop.distributed import DistInfo

# A validation batch holds at most this many pixels (8 crops of 512 x 512).
VAL_BATCH_PIXELS = 8 * 512 * 512


class EpochSampler(Sampler[tuple[int, int, tuple[float, float] | None]]):
    """Yields ``(index, augmentation seed, zoom range)`` for one epoch on one rank.

    The zoom range (``set_zoom``; None: the transform's own) travels with each item so that
    it reaches DataLoader workers, persistent or not, the epoch it is set.

    Args:
        size: dataset length.
        epoch_size: minimum samples per epoch over all ranks (small datasets repeat).
        batch_size: per-rank batch size; the epoch is padded to whole batches on every rank.
        seed: the run's seed.
        info: rank and world size.
    """

    def __init__(
        self, size: int, *, epoch_size: int, batch_size: int, seed: int, info: DistInfo
    ) -> None:
        if size < 1:
            raise ValueError("the training set is empty")
        self.size = size
        self.seed = seed
        self.info = info
        chunk = batch_size * info.world_size
        self.total = math.ceil(max(size, epoch_size) / chunk) * chunk
        self.epoch = 0
        self.zoom: tuple[float, float] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_zoom(self, zoom: tuple[float, float] | None) -> None:
        """The zoom range of the items of the epochs from the next ``iter`` on."""
        self.zoom = zoom

    def __len__(self) -> int:
        return self.total // self.info.world_size

    def __iter__(self) -> Iterator[tuple[int, int, tuple[float, float] | None]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        repeats = math.ceil(self.total / self.size)
        order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(repeats)])
        seeds = torch.randint(0, 2**31 - 1, (self.total,), generator=generator)
        rank, world = self.info.rank, self.info.world_size
        indices = order[: self.total][rank::world].tolist()
        zooms = [self.zoom] * len(indices)
        return iter(zip(indices, seeds[rank::world].tolist(), zooms, strict=True))


class SizeBatches(Sampler[list[int]]):
    """Validation batches: every index (or every one of ``indices``) of this rank's shard
    once, batched by equal size.

    Full-size validation images of mixed sizes padded into one batch waste most of the
    compute on padding (a 509x544 image beside a 2149x1480 one); here a batch only holds
    images of one size, and at most ``max_pixels`` pixels (large images go one at a time).
    """

    def __init__(
        self,
        sizes: list[tuple[int, int]],
        *,
        batch_size: int,
        info: DistInfo,
        max_pixels: int = VAL_BATCH_PIXELS,
        indices: Sequence[int] | None = None,
    ) -> None:
        chosen = list(range(len(sizes)) if indices is None else indices)
        groups: dict[tuple[int, int], list[int]] = {}
        for index in chosen[info.rank :: info.world_size]:
            groups.setdefault(tuple(sizes[index]), []).append(index)
        self.batches = []
        for (height, width), indices in groups.items():
            step = max(1, min(batch_size, max_pixels // max(1, height * width)))
            self.batches += [indices[i : i + step] for i in range(0, len(indices), step)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def eval_loader(
    dataset: SegmentationDataset,
    *,
    batch_size: int,
    workers: int,
    ignore_index: int,
    info: DistInfo,
    pin_memory: bool = False,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """Full-size images in ``SizeBatches`` (every image, or every one of ``indices``, once
    over all ranks)."""
    sizes = [dataset.image_size(i) for i in range(len(dataset))]
    return DataLoader(
        dataset,
        batch_sampler=SizeBatches(sizes, batch_size=batch_size, info=info, indices=indices),
        **_loader_options(workers, ignore_index, pin_memory),
    )


def _loader_options(workers: int, ignore_index: int, pin_memory: bool) -> dict:
    """What the training and validation loaders share: workers, padding collate, pinning."""
    return {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "persistent_workers": workers > 0,
        "collate_fn": functools.partial(pad_collate, ignore_index=ignore_index),
        "multiprocessing_context": worker_context(workers),
    }


class SeededItems(Dataset):
    """Wraps a training ``SegmentationDataset``: item ``(index, seed, zoom)`` is augmented with
    ``seed`` and, when ``zoom`` is not None, that zoom range."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(
        self, item: tuple[int, int, tuple[float, float] | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed, zoom = item
        transform = self.dataset.transform
        transform.reseed(seed)
        if zoom is not None:
            transform.set_zoom(zoom)
        image, mask = self.dataset.load(index)
        points = None
        if transform.augment.class_crop_p > 0:
            points = self.dataset.class_points(index, mask)
        image, mask = transform(image, mask, points)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))


def worker_context(workers: int) -> str | None:
    """DataLoader worker start method: ``forkserver`` whenever there are workers.

    Workers start from a clean server process, not a fork of this one. A process that has
    already run OpenVINO (export's precision checks load it in-process on bf16 CPUs) crashed
    with SIGSEGV when the DataLoader forked it; fork is unsafe once native thread pools exist.
    The price: each worker gets its own copy of the dataset instead of sharing it
    copy-on-write.
    """
    return "forkserver" if workers > 0 else None


def build_loaders(
    train_ds: SegmentationDataset,
    val_ds: SegmentationDataset,
    *,
    batch_size: int,
    epoch_size: int,
    workers: int,
    seed: int,
    ignore_index: int,
    info: DistInfo,
    pin_memory: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """The training loader (``EpochSampler``; call ``loader.sampler.set_epoch(e)``) and the
    validation loader (``eval_loader``: full-size images in batches of one size)."""
    common = _loader_options(workers, ignore_index, pin_memory)
    sampler = EpochSampler(
        len(train_ds), epoch_size=epoch_size, batch_size=batch_size, seed=seed, info=info
    )
    train_loader = DataLoader(
        SeededItems(train_ds), batch_size=batch_size, sampler=sampler, drop_last=True, **common
    )
    val_loader = eval_loader(
        val_ds,
        batch_size=batch_size,
        workers=workers,
        ignore_index=ignore_index,
        info=info,
        pin_memory=pin_memory,
    )
    return train_loader, val_loader
