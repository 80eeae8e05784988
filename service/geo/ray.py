"""``fcn predict --engine ray`` on a GeoTIFF: one raster's tile rows split across Ray workers.

The driver cuts the strips of tile rows of each column panel (:class:`service.geo.grid.Grid`)
into contiguous parts and hands them to a pool of actors, each holding one model session. A
worker that starts at strip ``s`` first runs the strips from
:func:`~service.geo.grid.halo_start` to ``s - 1`` without writing them (usually one strip),
which rebuilds exactly the blended sums the strips above leave for its rows; it then writes its
rows into its own part raster. The driver copies each finished part's rows and panel columns
into the mask (and probabilities), by chunks of rows, and writes the COGs as the local path
does (:func:`~service.geo.run.finish_raster`), so both engines produce the same bytes. The
raster and the output folder must be on storage every node sees.

A killed run resumes per strip: the plan of parts and each part's progress are kept beside the
outputs (:mod:`service.geo.ray_parts`), and a resumed part starts at its first strip not on
disk, its worker rerunning the halo above it as any part does.

``ray`` is an optional extra (``pip install 'fcnseg[ray]'``), imported only when called.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from service.engine import EngineConfig
from service.geo.grid import Grid
from service.geo.ray_parts import Part, RayRun
from service.geo.run import (
    GDAL_CACHE_MB,
    GeoOptions,
    GeoResult,
    Progress,
    finish_raster,
    output_tags,
    run_fingerprint,
)
from service.geo.tiled import Strip

# Rows copied from a part raster into the mask at a time (bounded memory on the driver).
MERGE_ROWS = 1024


class RasterWorker:
    """A Ray actor: one model session, segmenting parts of one raster.

    ``after_strip`` is called once a strip and the part's progress are on disk (tests
    interrupt a run here).
    """

    def __init__(
        self,
        model_path: str,
        config: EngineConfig,
        source: str,
        options: GeoOptions,
        after_strip: Callable[[Strip], None] | None = None,
    ):
        from service.engine import Engine

        self.engine = Engine.load(model_path, config)
        self.source, self.options, self.after_strip = source, options, after_strip

    def run(self, part: Part, resume_at: int) -> dict:
        """Segment strips ``resume_at .. part.stop - 1`` of ``part`` into its rasters (fresh
        ones when ``resume_at`` is the part's start), recording its progress after each."""
        import rasterio

        from service.geo.grid import halo_start
        from service.geo.inputs import open_raster
        from service.geo.resume import create_raster, write_rows
        from service.geo.tiled import segment_strips

        meta, opts = self.engine.metadata, self.options
        with (
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
            open_raster(self.source, meta.in_channels, bands=opts.bands, rescale=opts.rescale) as r,
        ):
            grid = Grid.of_config(r.height, r.width, self.engine.config, meta.size_multiple)
            if resume_at == part.start:
                create_raster(part.path("mask"), r.profile, 1, 255)
                if opts.probabilities:
                    create_raster(part.path("prob"), r.profile, meta.num_classes, None)
            tiles_run = 0

            def on_strip(strip: Strip) -> None:
                nonlocal tiles_run
                if strip.index < resume_at:  # the halo: its sums only, not its rows
                    return
                tiles_run += strip.tiles_run
                write_rows(part.path("mask"), strip.y0, strip.mask[None], strip.x0)
                if strip.probabilities is not None:
                    write_rows(part.path("prob"), strip.y0, strip.probabilities, strip.x0)
                part.record(strip.index + 1)
                if self.after_strip is not None:
                    self.after_strip(strip)

            segment_strips(
                self.engine,
                grid,
                r.read,
                on_strip,
                panel=grid.panels(opts.panel_width)[part.panel],
                start=halo_start(grid, resume_at),
                stop=part.stop,
                probabilities=opts.probabilities,
                streams=1,
            )
        return {"part": part, "tiles_run": tiles_run}


def split_strips(strips: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(strips)``."""
    parts = max(1, min(parts, strips))
    bounds = [round(i * strips / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def segment_raster_ray(
    model_path: str | os.PathLike,
    config: EngineConfig,
    source: str | os.PathLike,
    stem: str | os.PathLike,
    options: GeoOptions | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    after_strip: Callable[[Strip], None] | None = None,
) -> GeoResult:
    """Segment one raster on Ray workers into the same outputs as :func:`segment_raster`,
    resuming a killed run's finished strips when ``options.resume``.

    Args:
        after_strip: passed to every worker (see :class:`RasterWorker`).

    Raises:
        GeoDependencyError / GeoInputError: as the local path.
    """
    import rasterio
    import ray

    from service.engine import read_model_metadata
    from service.geo.inputs import open_raster

    options = options or GeoOptions()
    meta = read_model_metadata(model_path, config)
    source, stem, start_time = Path(source), Path(stem), time.perf_counter()
    with open_raster(source, meta.in_channels, bands=options.bands, rescale=options.rescale) as r:
        grid = Grid.of_config(r.height, r.width, config, meta.size_multiple)
        profile = r.profile
        tags = output_tags(r, options, meta)
        run = RayRun(stem, run_fingerprint(source, r, grid, options, meta), options.probabilities)
        pixel_km2 = r.pixel_km2
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    count = actors or max(1, int(ray.available_resources().get("CPU", 1)))
    panels = grid.panels(options.panel_width)
    per_panel = -(-2 * count // len(panels))  # two parts per worker in all: balance
    ranges = [(p.index, a, b) for p in panels for a, b in split_strips(len(grid.ys), per_panel)]
    plan = run.plan(ranges, options.resume)
    result = GeoResult(source, width=grid.width, height=grid.height, tiles=grid.tiles)
    result.km2 = pixel_km2 * grid.width * grid.height if pixel_km2 is not None else None
    result.strips_resumed = sum(resume_at - part.start for part, resume_at in plan)
    todo = [(part, resume_at) for part, resume_at in plan if resume_at < part.stop]
    if todo:
        args = (str(model_path), config, str(source), replace(options, streams=1), after_strip)
        _run_parts(args, todo, count, grid, panels, result, plan, on_progress)
    parts = [part for part, _ in plan]
    partials = _merge(grid, panels, profile, meta.num_classes, stem, parts, options.probabilities)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        result.outputs, result.item = finish_raster(stem, source, partials, meta, tags)
    for path in partials:
        path.unlink()
    run.cleanup()
    result.seconds = time.perf_counter() - start_time
    return result


def _run_parts(args, todo, count, grid, panels, result, plan, on_progress) -> None:
    """Run the unfinished parts on a pool of ``count`` actors, reporting progress by area.

    The actors are killed when this returns or raises, so none of them goes on writing a
    part after the driver gave up on the run.
    """
    import ray
    from ray.util import ActorPool

    worker = ray.remote(num_cpus=1)(RasterWorker)
    actors = [worker.remote(*args) for _ in range(min(count, len(todo)))]
    done = {part: _area(grid, panels, part, part.start, at) for part, at in plan}
    try:
        jobs = ActorPool(actors).map_unordered(lambda a, job: a.run.remote(*job), todo)
        for row in jobs:
            part = row["part"]
            result.tiles_run += row["tiles_run"]
            done[part] = _area(grid, panels, part, part.start, part.stop)
            if on_progress is not None:
                share = sum(done.values()) / (grid.width * grid.height)
                km2 = result.km2 * share if result.km2 is not None else None
                on_progress(Progress(round(share * grid.tiles), grid.tiles, km2, result.km2))
    finally:
        for actor in actors:
            ray.kill(actor)


def _rows(grid: Grid, start: int, stop: int) -> range:
    """The raster rows strips ``start .. stop - 1`` finish."""
    return range(grid.ys[start], grid.ys[stop] if stop < len(grid.ys) else grid.height)


def _area(grid: Grid, panels, part: Part, start: int, stop: int) -> int:
    """Pixels strips ``start .. stop - 1`` of ``part`` finish."""
    rows = _rows(grid, start, stop) if stop > start else range(0)
    return len(rows) * (panels[part.panel].own1 - panels[part.panel].own0)


def _merge(grid, panels, profile, num_classes, stem, parts, probabilities) -> list[Path]:
    """Copy each part's rows and panel columns into ``STEM_mask.partial.tif`` (and
    ``STEM_prob.partial.tif``), which it returns. The parts stay until the COGs are written:
    a run killed while merging merges again when resumed."""
    import rasterio
    from rasterio.windows import Window

    from service.geo.resume import create_raster, write_rows

    kinds = [("mask", 1, 255)] + ([("prob", num_classes, None)] if probabilities else [])
    targets = []
    for kind, count, nodata in kinds:
        target = Path(f"{stem}_{kind}.partial.tif")
        create_raster(target, profile, count, nodata)
        for part in parts:
            own0, own1 = panels[part.panel].own0, panels[part.panel].own1
            rows = _rows(grid, part.start, part.stop)
            with rasterio.open(part.path(kind)) as src:
                for y in range(rows.start, rows.stop, MERGE_ROWS):
                    height = min(MERGE_ROWS, rows.stop - y)
                    data = src.read(window=Window(own0, y, own1 - own0, height))
                    write_rows(target, y, data, own0)
        targets.append(target)
    return targets
