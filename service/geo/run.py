"""Segment one georeferenced raster into COGs: the per-file driver of ``fcn predict`` on GeoTIFFs.

``segment_raster`` opens the input (:mod:`service.geo.inputs`), resumes or starts its partial
outputs (:mod:`service.geo.resume`), runs the strips of each column panel
(:mod:`service.geo.grid`, :mod:`service.geo.tiled`) reporting progress in tiles and km^2, and converts the partial rasters to COGs (:mod:`service.geo.cog`).
``is_georaster`` decides which inputs take this path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.engine import Engine
from service.geo.grid import PANEL_WIDTH, Grid
from service.geo.tiled import Strip, segment_strips

logger = logging.getLogger(__name__)

GEO_SUFFIXES = frozenset({".tif", ".tiff"})
GDAL_CACHE_MB = 64


@dataclass(frozen=True)
class GeoOptions:
    """How to segment a raster.

    Attributes:
        bands: 1-based bands in the model's channel order (``--bands``); None: the rule of
            :mod:`service.geo.inputs`.
        rescale: fixed ``(MIN, MAX)`` to map to 0..255 (``--rescale``); None: the default rule.
        probabilities: also write ``NAME_prob.tif``.
        resume: continue a matching partial run (else start over).
        streams: windows run at once.
        model: the model's name, written into the COG tags.
        panel_width: columns segmented at a time (:mod:`service.geo.grid`): bounds memory
            whatever the raster's width; does not change the output.
    """

    bands: tuple[int, ...] | None = None
    rescale: tuple[float, float] | None = None
    probabilities: bool = False
    resume: bool = True
    streams: int = 2
    model: str | None = None
    panel_width: int = PANEL_WIDTH


@dataclass(frozen=True)
class Progress:
    """Where a raster's run stands (the windows of strips finished so far)."""

    tiles_done: int
    tiles_total: int
    km2_done: float | None
    km2_total: float | None


@dataclass
class GeoResult:
    """What one raster produced."""

    source: Path
    outputs: list[Path] = field(default_factory=list)
    width: int = 0
    height: int = 0
    tiles: int = 0
    tiles_run: int = 0
    strips_resumed: int = 0
    km2: float | None = None
    seconds: float = 0.0
    item: Path | None = None  # the STAC Item (STEM.stac.json)


def output_paths(stem: Path, probabilities: bool) -> list[Path]:
    """``STEM_mask.tif`` (and ``STEM_prob.tif``)."""
    paths = [stem.with_name(stem.name + "_mask.tif")]
    if probabilities:
        paths.append(stem.with_name(stem.name + "_prob.tif"))
    return paths


def segment_raster(
    engine: Engine,
    source: str | os.PathLike,
    stem: str | os.PathLike,
    options: GeoOptions | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    after_strip: Callable[[Strip], None] | None = None,
) -> GeoResult:
    """Segment ``source`` into ``STEM_mask.tif`` (+ ``STEM_prob.tif``), resuming if it can.

    Args:
        after_strip: called once a strip is durably written (tests interrupt a run here).

    Raises:
        GeoDependencyError: the geo extra is missing.
        GeoInputError: the raster does not fit the model as asked.
    """
    from service.geo import require_rasterio

    # GDAL's block cache defaults to 5% of RAM: on a big machine it alone would hold gigabytes
    # of a large raster's blocks. Each strip is read once (its overlap with the last twice),
    # so a cache of a few strips loses nothing.
    with require_rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _segment(
            engine, Path(source), Path(stem), options or GeoOptions(), on_progress, after_strip
        )


def _segment(
    engine: Engine,
    source: Path,
    stem: Path,
    options: GeoOptions,
    on_progress: Callable[[Progress], None] | None,
    after_strip: Callable[[Strip], None] | None,
) -> GeoResult:
    from service.geo.inputs import open_raster

    meta = engine.metadata
    start = time.perf_counter()
    with open_raster(source, meta.in_channels, bands=options.bands, rescale=options.rescale) as r:
        grid, partial = _partial_run(engine, source, stem, options, r)
        if not options.resume:
            partial.cleanup()
        done, carry = partial.resume_point()
        result = GeoResult(source, width=r.width, height=r.height, tiles=grid.tiles)
        result.strips_resumed = done
        pixel_km2 = r.pixel_km2
        result.km2 = pixel_km2 * r.width * r.height if pixel_km2 is not None else None

        def on_strip(strip: Strip) -> None:
            partial.write(strip)
            result.tiles_run += strip.tiles_run
            if on_progress is not None:  # panels own the columns left of x0, top to bottom
                rows, cols = strip.mask.shape
                share = (strip.x0 * r.height + (strip.y0 + rows) * cols) / (r.width * r.height)
                km2 = result.km2 * share if result.km2 is not None else None
                on_progress(Progress(round(share * grid.tiles), grid.tiles, km2, result.km2))
            if after_strip is not None:
                after_strip(strip)

        first_panel, first_strip = divmod(done, len(grid.ys))
        for panel in grid.panels(options.panel_width)[first_panel:]:
            resumed = first_strip if panel.index == first_panel else 0
            segment_strips(
                engine,
                grid,
                r.read,
                on_strip,
                panel=panel,
                start=resumed,
                carry=carry if resumed else None,
                probabilities=options.probabilities,
                streams=options.streams,
            )
        tags = output_tags(r, options, meta)
    partials = [partial.mask_path] + ([partial.prob_path] if options.probabilities else [])
    result.outputs, result.item = finish_raster(stem, source, partials, meta, tags)
    partial.cleanup()
    result.seconds = time.perf_counter() - start
    return result


def finish_raster(
    stem: Path, source: Path, partials: list[Path], meta, tags: dict[str, str]
) -> tuple[list[Path], Path]:
    """The one end of every raster run (local, Ray, jobs): the finished partial mask (and
    probabilities) -> ``STEM_mask.tif`` (and ``STEM_prob.tif``) COGs, then the STAC Item
    ``STEM.stac.json`` describing them (:mod:`service.geo.stac`).

    Returns ``(COG paths, Item path)``; the partial rasters are left for the caller to remove.
    """
    from service.geo.cog import write_mask_cog, write_probability_cog
    from service.geo.stac import write_stac_item

    targets = output_paths(stem, len(partials) > 1)
    write_mask_cog(partials[0], targets[0], meta.classes, meta.palette, tags)
    if len(partials) > 1:
        write_probability_cog(partials[1], targets[1], meta.classes, tags)
    return targets, write_stac_item(stem, source, targets, meta, tags)


def output_tags(raster, options: GeoOptions, meta) -> dict[str, str]:
    """The ``MODEL``, ``RESCALE`` and ``BANDS`` tags of the output COGs."""
    tags = {"MODEL": str(options.model or meta.arch), "RESCALE": raster.scaling_note}
    tags["BANDS"] = ",".join(str(b) for b in raster.indexes)
    return tags


def _partial_run(engine: Engine, source: Path, stem: Path, options: GeoOptions, raster):
    """``(grid, PartialRun)`` of ``source`` (open as ``raster``) segmented into ``stem``."""
    from service.geo.resume import PartialRun

    meta = engine.metadata
    grid = Grid.of_config(raster.height, raster.width, engine.config, meta.size_multiple)
    fingerprint = run_fingerprint(source, raster, grid, options, meta)
    partial = PartialRun(stem, raster.profile, meta.num_classes, fingerprint, options.probabilities)
    return grid, partial


def saved_strips(
    engine: Engine, source: str | os.PathLike, stem: str | os.PathLike, options: GeoOptions
) -> tuple[bool, int | None]:
    """Whether ``stem`` has a resume sidecar, and the strips it finished if it matches this
    run of ``source`` (None: it does not, or its files are gone: the run would start over).

    Raises:
        GeoDependencyError, GeoInputError: as :func:`segment_raster`.
    """
    from service.geo import require_rasterio
    from service.geo.inputs import open_raster

    meta = engine.metadata
    source = Path(source)
    with (
        require_rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
        open_raster(source, meta.in_channels, bands=options.bands, rescale=options.rescale) as r,
    ):
        _, partial = _partial_run(engine, source, Path(stem), options, r)
        _, done = partial.saved()
    return partial.state_path.exists(), done


def run_fingerprint(source: Path, raster, grid: Grid, options: GeoOptions, meta) -> dict:
    """What a saved partial run (local or Ray) must match to be resumed."""
    stat = source.stat()
    return {
        "input": [source.name, stat.st_size, stat.st_mtime_ns, raster.width, raster.height],
        "model": [options.model, meta.arch, meta.num_classes, list(meta.classes)],
        "grid": [grid.tile_h, grid.tile_w, grid.overlap, grid.multiple],
        "panels": [[p.own0, p.own1] for p in grid.panels(options.panel_width)],
        "bands": list(raster.indexes),
        "scaling": [raster.scaling.rule, raster.scaling.ranges],
        "probabilities": options.probabilities,
    }


def is_georaster(path: str | os.PathLike) -> bool:
    """Whether ``fcn predict`` should take the geo path for ``path`` without ``--geo``.

    A ``.tif``/``.tiff`` that carries a CRS or a georeferencing transform. Checked with
    rasterio when it is installed; without it, with the Pillow header reader
    (:mod:`service.georef`), and a georeferenced file then raises the missing-extra error.
    """
    if Path(path).suffix.lower() not in GEO_SUFFIXES:
        return False
    try:
        import rasterio
    except ImportError:
        from service.geo import require_rasterio
        from service.georef import read_georeference

        if read_georeference(path) is not None:
            require_rasterio()  # raises, naming the extra
        return False
    try:
        with rasterio.open(path) as dataset:
            return dataset.crs is not None or not dataset.transform.is_identity
    except rasterio.errors.RasterioIOError:
        return False
