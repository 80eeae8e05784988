"""The run folder's per-epoch records: ``metrics.csv`` and the two PNGs.

``metrics.csv`` has one row per epoch: ``epoch, step, lr, train_loss``, the validation
summary (``val_miou, val_pixel_accuracy, val_mean_accuracy, val_dice``), ``val_images``
(how many validation images were scored: fewer than all when an in-budget validation was
shrunk to fit the time, training/loop/validation.py), one
``val_iou_<class>`` column per class, then ``images_per_s`` (training throughput of that
epoch), ``epoch_s`` (its training seconds) and ``elapsed_s`` (since the run started,
resumes included). Empty cells mean "not measured" (no validation set) or NaN.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from training.data.datasets import DatasetInfo
from training.loop.epoch import EpochStats
from training.loop.metrics import Metrics

logger = logging.getLogger(__name__)

SUMMARY = ("miou", "pixel_accuracy", "mean_accuracy", "dice")


class MetricsLog:
    """Append-only ``metrics.csv`` writer (rank 0 only).

    Args:
        path: the CSV file.
        classes: class names (one IoU column each).
    """

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = [
            "epoch",
            "step",
            "lr",
            "train_loss",
            *(f"val_{k}" for k in SUMMARY),
            "val_images",
            *(f"val_iou_{c}" for c in classes),
            "images_per_s",
            "epoch_s",
            "elapsed_s",
        ]

    def start(self, keep_epochs: int = 0) -> None:
        """Write the header; on resume keep the rows of the first ``keep_epochs`` epochs."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if keep_epochs and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_epochs]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(
        self,
        epoch: int,
        step: int,
        stats: EpochStats,
        metrics: Metrics | None,
        elapsed: float,
        val_images: int = 0,
    ) -> dict[str, Any]:
        """Add one epoch's row (``val_images``: how many images ``metrics`` scored)."""
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "lr": f"{stats.lr:.6g}",
            "train_loss": _fmt(stats.loss),
            "images_per_s": f"{stats.images_per_s:.3f}",
            "epoch_s": f"{stats.seconds:.2f}",
            "elapsed_s": f"{elapsed:.1f}",
        }
        if metrics is not None:
            row.update({f"val_{k}": _fmt(v) for k, v in metrics.summary().items()})
            row["val_images"] = val_images
            row.update(
                {
                    f"val_iou_{c}": _fmt(v)
                    for c, v in zip(metrics.classes, metrics.per_class_iou, strict=True)
                }
            )
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        return row


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def write_plots(
    out: Path,
    csv_path: Path,
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    info: DatasetInfo,
) -> None:
    """Refresh ``curves.png`` and (with samples) ``predictions.png`` in ``out``.

    A plotting failure (a broken matplotlib, a full disk) is logged, not raised: losing a
    picture must not kill a long run.
    """
    from training.loop.visualize import plot_curves, prediction_grid

    try:
        plot_curves(csv_path, out / "curves.png")
        if samples:
            prediction_grid(
                samples,
                out / "predictions.png",
                palette=info.palette,
                mean=info.mean,
                std=info.std,
            )
    except Exception:  # see the docstring: a lost picture must not end the run
        logger.exception("could not write the plots in %s", out)
