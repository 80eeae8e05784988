"""Pictures of a run: training curves from ``metrics.csv`` and a validation prediction grid.

Both are written atomically next to the checkpoints each epoch (``curves.png``,
``predictions.png``), so a run can be watched while it trains. matplotlib is imported
lazily with the non-interactive Agg backend (no display needed, nothing imported at
``import training``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.formats.raster import colorize


def _replace(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path`` (readers never see half a PNG)."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    write(tmp)
    os.replace(tmp, path)
    return path


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as floats (empty cells become NaN)."""
    with open(path, newline="") as f:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def plot_curves(csv_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Plot train loss, validation mIoU (and per-class IoU) and learning rate against epochs.

    Returns:
        The PNG's path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = read_metrics_csv(csv_path)
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    axes[0].plot(epochs, [r["train_loss"] for r in rows], marker=".")
    axes[0].set(title="training loss", xlabel="epoch")
    for key in [k for k in (rows[0] if rows else {}) if k.startswith("val_iou_")]:
        axes[1].plot(epochs, [r[key] for r in rows], lw=1, alpha=0.6, label=key[8:])
    axes[1].plot(epochs, [r["val_miou"] for r in rows], marker=".", color="k", label="mIoU")
    axes[1].set(title="validation IoU", xlabel="epoch", ylim=(0, 1))
    axes[1].legend(fontsize=7, loc="lower right")
    axes[2].plot([r["step"] for r in rows], [r["lr"] for r in rows], marker=".")
    axes[2].set(title="learning rate (end of epoch)", xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
    out = Path(out)
    _replace(out, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)
    return out


def _colorize(indices: torch.Tensor, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class indices (int64, ignore index included) in the serving side's colours."""
    mask = np.clip(indices.numpy(), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return colorize(mask, palette)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``(C, H, W)`` tensor -> displayable ``(H, W, 3)`` uint8."""
    array = image.float().numpy() * np.asarray(std, np.float32)[:, None, None]
    array += np.asarray(mean, np.float32)[:, None, None]
    array = np.clip(array.transpose(1, 2, 0)[..., :3] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def prediction_grid(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    out: str | os.PathLike,
    *,
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
    max_side: int = 256,
) -> Path:
    """One row per sample: image | ground truth | prediction, colour-coded by ``palette``.

    Args:
        samples: ``(normalised image (C, H, W), mask (H, W), prediction (H, W))`` tensors.
        out: the PNG to write.
        palette: RGB colour per class (ignored pixels, past the palette, show black).
        mean, std: the normalisation to undo for display.
        max_side: tiles are downscaled to at most this size.

    Returns:
        The PNG's path.
    """
    if not samples:
        raise ValueError("prediction_grid needs at least one sample")
    rows = []
    for image, mask, prediction in samples:
        tiles = [
            denormalize(image, mean, std),
            _colorize(mask, palette),
            _colorize(prediction, palette),
        ]
        height, width = tiles[0].shape[:2]
        scale = min(1.0, max_side / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        tiles = [np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles]
        rows.append(tiles)
    gap = 4
    tile_h = max(t[0].shape[0] for t in rows)
    tile_w = max(t[0].shape[1] for t in rows)
    canvas = np.full(
        (len(rows) * (tile_h + gap) + gap, 3 * (tile_w + gap) + gap, 3), 255, dtype=np.uint8
    )
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            y, x = gap + r * (tile_h + gap), gap + c * (tile_w + gap)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    out = Path(out)
    return _replace(out, lambda tmp: Image.fromarray(canvas).save(tmp))
