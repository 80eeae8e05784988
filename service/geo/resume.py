"""Partial outputs of a raster being segmented, and the sidecar a killed run resumes from.

Beside the final ``NAME_mask.tif`` a run keeps, until it finishes:

* ``NAME_mask.partial.tif`` (and ``NAME_prob.partial.tif``): plain GeoTIFFs, one row per
  block, written strip by strip (a panel's columns of them) and closed after each (so every
  finished row is on disk);
* ``NAME.resume.npz``: the accumulator rows the panel's next strip still adds to
  (:class:`Carry`);
* ``NAME.resume.json``: the fingerprint of the run (input size and mtime, model, windows,
  panels, bands, rescale rule) and how many strips are finished, counted in run order (every
  strip of the first column panel, then of the next: :class:`service.geo.tiled.Strip`).

The order is what makes a resume exact: rows first, then the carry, then the sidecar, each
fsynced and the last two renamed into place. A sidecar therefore never counts a strip whose
rows or carry are not on disk, and a resumed run, starting from that strip with that carry,
writes the same bytes an uninterrupted one would. A fingerprint that no longer matches (another
model, another input) starts over.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.geo.tiled import NODATA, Carry, Strip

logger = logging.getLogger(__name__)


def _fsync_replace(tmp: Path, target: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_json(path: Path, value: dict) -> None:
    """Write ``value`` as JSON to ``path`` durably: a temporary file, fsynced, renamed."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    _fsync_replace(tmp, path)


@dataclass
class PartialRun:
    """The partial rasters and resume files of one input under ``out_dir``.

    Args:
        stem: output name without suffix (``out/tile`` -> ``out/tile_mask.tif`` ...).
        profile: rasterio profile of the input (CRS, transform, size).
        num_classes: K, bands of the probability raster.
        fingerprint: what must match for a resume to be valid.
        probabilities: whether a probability raster is written.
    """

    stem: Path
    profile: dict
    num_classes: int
    fingerprint: dict
    probabilities: bool = False

    @property
    def mask_path(self) -> Path:
        return self.stem.with_name(self.stem.name + "_mask.partial.tif")

    @property
    def prob_path(self) -> Path:
        return self.stem.with_name(self.stem.name + "_prob.partial.tif")

    @property
    def state_path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".resume.json")

    @property
    def carry_path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".resume.npz")

    def saved(self) -> tuple[dict | None, int | None]:
        """``(state, strips_done)`` of the sidecar; ``strips_done`` is None unless it matches
        this run and its partial rasters are there (``state`` is None without a sidecar)."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None, None
        ready = self.mask_path.exists() and (self.prob_path.exists() or not self.probabilities)
        if state.get("fingerprint") == self.fingerprint and ready and self.carry_path.exists():
            return state, int(state["strips_done"])
        return state, None

    def resume_point(self) -> tuple[int, Carry | None]:
        """``(strips_done, carry)`` from a matching sidecar, else ``(0, None)`` (fresh files)."""
        state, done = self.saved()
        if done is not None:
            if done == 0:
                return 0, None
            with np.load(self.carry_path) as saved:
                carry = Carry(saved["total"], saved["weight"]) if saved["total"].size else None
            logger.info("resuming %s after %d strips", self.stem, done)
            return done, carry
        if state is not None:
            logger.info("%s: the saved run does not match this one; starting over", self.stem)
        self._create()
        return 0, None

    def _create(self) -> None:
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.cleanup()
        create_raster(self.mask_path, self.profile, 1, NODATA)
        if self.probabilities:
            create_raster(self.prob_path, self.profile, self.num_classes, None)
        self._write_state(0, None)

    def write(self, strip: Strip) -> None:
        """Write the strip's rows, then its carry and the sidecar (each durable)."""
        write_rows(self.mask_path, strip.y0, strip.mask[None], strip.x0)
        if strip.probabilities is not None:
            write_rows(self.prob_path, strip.y0, strip.probabilities, strip.x0)
        self._write_state(strip.strips_done, strip.carry)

    def _write_state(self, strips_done: int, carry: Carry | None) -> None:
        tmp = self.carry_path.with_name(self.carry_path.name + ".tmp.npz")
        empty = np.zeros((0,), dtype=np.float32)
        np.savez(
            tmp,
            total=carry.total if carry else empty,
            weight=carry.weight if carry else empty,
        )
        _fsync_replace(tmp, self.carry_path)
        save_json(self.state_path, {"fingerprint": self.fingerprint, "strips_done": strips_done})

    def cleanup(self, *, keep_rasters: bool = False) -> None:
        """Remove the resume files (and the partial rasters unless ``keep_rasters``)."""
        paths = [self.state_path, self.carry_path]
        if not keep_rasters:
            paths += [self.mask_path, self.prob_path]
        for path in paths:
            path.unlink(missing_ok=True)


def create_raster(path: Path, profile: dict, count: int, nodata: int | None) -> None:
    """An empty partial GeoTIFF: one row per block, so strips never share a block."""
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=profile["width"],
        height=profile["height"],
        crs=profile["crs"],
        transform=profile["transform"],
        dtype="uint8",
        count=count,
        nodata=nodata,
        compress="deflate",
        blockysize=1,
        BIGTIFF="IF_SAFER",
    ):
        pass


def write_rows(path: Path, y0: int, data: np.ndarray, x0: int = 0) -> None:
    """Write ``(bands, rows, cols)`` at ``(y0, x0)`` of ``path``, closed and fsynced (durable)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path, "r+") as dst:
        dst.write(data, window=Window(x0, y0, data.shape[2], data.shape[1]))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
