"""The parts of a Ray run over one raster, and the sidecars a killed Ray run resumes from.

The driver of ``fcn predict --engine ray`` (:mod:`service.geo.ray`) cuts each column panel's
strips into contiguous parts. Beside the final outputs it keeps, until the raster is finished:

* ``NAME.ray.json``: the run's fingerprint (the same one the local path keeps,
  :func:`service.geo.run.fingerprint`) and its **plan**, the ``[panel, start, stop]`` of every
  part, written durably before any worker starts;
* ``NAME.partNNN_mask.tif`` (+ ``_prob.tif``): part ``NNN``'s rows, written by its worker strip
  by strip, each write closed and fsynced;
* ``NAME.partNNN.json``: ``{"next": S}``, the first strip of the part whose rows are not on disk,
  written (fsynced, renamed into place) after each strip's rows.

A resumed run keeps the saved plan whatever ``--actors`` is now, skips finished parts and
starts each unfinished one at its ``next`` strip. Its worker first reruns the strips whose
windows reach that strip without writing them (:func:`~service.geo.grid.halo_start`), exactly
as any part that starts mid-panel does, so a resumed part writes the bytes an uninterrupted one
would; no accumulator is saved. A plan whose fingerprint no longer matches, or a run without
``--resume``, removes the old parts and starts over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from service.geo.resume import save_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """Strips ``start .. stop - 1`` of panel ``panel``, written under the prefix ``name``."""

    panel: int
    start: int
    stop: int
    name: str

    def path(self, kind: str) -> Path:
        """``NAME.partNNN_mask.tif`` (``kind`` "mask") or ``NAME.partNNN_prob.tif`` ("prob")."""
        return Path(f"{self.name}_{kind}.tif")

    @property
    def state_path(self) -> Path:
        return Path(f"{self.name}.json")

    def record(self, next_strip: int) -> None:
        """Say durably that every strip before ``next_strip`` is on disk (after its rows)."""
        save_json(self.state_path, {"next": next_strip})


@dataclass
class RayRun:
    """The plan and sidecars of one raster's Ray run under ``stem``."""

    stem: Path
    fingerprint: dict
    probabilities: bool

    @property
    def plan_path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".ray.json")

    def plan(self, ranges: list[tuple[int, int, int]], resume: bool) -> list[tuple[Part, int]]:
        """Every part with the strip it (re)starts at: ``stop`` for a finished one.

        With ``resume`` and a saved plan of the same fingerprint, that plan and its progress;
        otherwise ``ranges`` (``(panel, start, stop)``), planned afresh.
        """
        saved = self._saved() if resume else None
        if saved is not None and saved["fingerprint"] == self.fingerprint:
            parts = self._parts(saved["parts"])
            progress = [(part, self._next(part)) for part in parts]
            done = sum(n - part.start for part, n in progress)
            logger.info("resuming %s: %d strips of %d parts on disk", self.stem, done, len(parts))
            return progress
        if saved is not None:
            logger.info("%s: the saved Ray run does not match this one; starting over", self.stem)
        self.cleanup()
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        save_json(self.plan_path, {"fingerprint": self.fingerprint, "parts": ranges})
        return [(part, part.start) for part in self._parts(ranges)]

    def parts(self) -> list[Part]:
        """The parts of the saved plan (none without one)."""
        saved = self._saved()
        return self._parts(saved["parts"]) if saved else []

    def _parts(self, ranges) -> list[Part]:
        prefix = str(self.stem)
        return [Part(p, a, b, f"{prefix}.part{i:03d}") for i, (p, a, b) in enumerate(ranges)]

    def _saved(self) -> dict | None:
        try:
            saved = json.loads(self.plan_path.read_text())
        except (OSError, ValueError):
            return None
        return saved if isinstance(saved, dict) and "parts" in saved else None

    def _next(self, part: Part) -> int:
        """The part's first strip not on disk (its start when its rasters are missing)."""
        kinds = ["mask", "prob"] if self.probabilities else ["mask"]
        if not all(part.path(kind).exists() for kind in kinds):
            return part.start
        try:
            next_strip = int(json.loads(part.state_path.read_text())["next"])
        except (OSError, ValueError, KeyError, TypeError):
            return part.start
        return min(max(next_strip, part.start), part.stop)

    def cleanup(self) -> None:
        """Remove the saved plan and every part it names (rasters and sidecars)."""
        for part in self.parts():
            for path in (part.path("mask"), part.path("prob"), part.state_path):
                path.unlink(missing_ok=True)
        self.plan_path.unlink(missing_ok=True)
