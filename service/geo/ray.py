"""``fcn predict --engine ray`` on a GeoTIFF: one raster's tile rows split across Ray workers.

The driver cuts the strips of tile rows of each column panel (:class:`service.geo.grid.Grid`)
into contiguous parts and hands them to a pool of actors, each holding one model session. A
worker that starts at strip ``s`` first runs the strips from
:func:`~service.geo.grid.halo_start` to ``s - 1`` without writing them (usually one strip),
which rebuilds exactly the blended sums the strips above leave for its rows; it then writes its
rows into its own part raster. The driver copies each finished part's rows and panel columns
into the mask (and probabilities), by chunks of rows, and writes the COGs as the local path
does, so both engines produce the same bytes. The raster and the output folder must be on storage every node sees.

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
from service.geo.run import GDAL_CACHE_MB, GeoOptions, GeoResult, Progress, output_paths

# Rows copied from a part raster into the mask at a time (bounded memory on the driver).
MERGE_ROWS = 1024


class RasterWorker:
    """A Ray actor: one model session, segmenting ranges of strips of one raster."""

    def __init__(self, model_path: str, config: EngineConfig, source: str, options: GeoOptions):
        from service.engine import Engine

        self.engine = Engine.load(model_path, config)
        self.source, self.options = source, options

    def run(self, panel: int, start: int, stop: int, part: str) -> dict:
        """Segment strips ``start .. stop - 1`` of ``panel`` into the rasters ``part``_mask/_prob."""
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
            grid = Grid.of(
                r.height,
                r.width,
                self.engine.tile_size,
                self.engine.config.tile_overlap,
                meta.size_multiple,
            )
            profile = {"width": r.width, "height": r.height, "crs": r.crs, "transform": r.transform}
            mask_path, prob_path = Path(part + "_mask.tif"), Path(part + "_prob.tif")
            create_raster(mask_path, profile, 1, 255)
            if opts.probabilities:
                create_raster(prob_path, profile, meta.num_classes, None)
            tiles_run = 0

            def on_strip(strip) -> None:
                nonlocal tiles_run
                if strip.index < start:  # the halo: its sums only, not its rows
                    return
                tiles_run += strip.tiles_run
                write_rows(mask_path, strip.y0, strip.mask[None], strip.x0)
                if strip.probabilities is not None:
                    write_rows(prob_path, strip.y0, strip.probabilities, strip.x0)

            segment_strips(
                self.engine,
                grid,
                r.read,
                on_strip,
                panel=grid.panels(opts.panel_width)[panel],
                start=halo_start(grid, start),
                stop=stop,
                probabilities=opts.probabilities,
                streams=1,
            )
        return {"panel": panel, "start": start, "stop": stop, "tiles_run": tiles_run}


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
) -> GeoResult:
    """Segment one raster on Ray workers into the same outputs as :func:`segment_raster`.

    Raises:
        GeoDependencyError / GeoInputError: as the local path.
    """
    import rasterio
    import ray
    from ray.util import ActorPool

    from service.engine import read_model_metadata
    from service.geo.cog import write_mask_cog, write_probability_cog
    from service.geo.inputs import open_raster

    options = options or GeoOptions()
    meta = read_model_metadata(model_path, config)
    source, stem, start_time = Path(source), Path(stem), time.perf_counter()
    with open_raster(source, meta.in_channels, bands=options.bands, rescale=options.rescale) as r:
        multiple = meta.size_multiple
        tile = -(-config.tile_size // multiple) * multiple  # as the engine rounds it
        grid = Grid.of(r.height, r.width, tile, config.tile_overlap, multiple)
        profile = {"width": r.width, "height": r.height, "crs": r.crs, "transform": r.transform}
        tags = {"MODEL": str(options.model or meta.arch), "RESCALE": r.scaling.rule}
        tags["BANDS"] = ",".join(str(b) for b in r.indexes)
        pixel_km2 = r.pixel_km2
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    count = actors or max(1, int(ray.available_resources().get("CPU", 1)))
    worker = ray.remote(num_cpus=1)(RasterWorker)
    options_one = replace(options, streams=1)
    pool = ActorPool(
        [worker.remote(str(model_path), config, str(source), options_one) for _ in range(count)]
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    panels = grid.panels(options.panel_width)
    per_panel = -(-2 * count // len(panels))  # two parts per worker in all: balance
    ranges = [(p.index, a, b) for p in panels for a, b in split_strips(len(grid.ys), per_panel)]
    parts = {job: f"{stem}.part{i:03d}" for i, job in enumerate(ranges)}
    result = GeoResult(source, width=grid.width, height=grid.height, tiles=grid.tiles)
    result.km2 = pixel_km2 * grid.width * grid.height if pixel_km2 is not None else None
    area_done = 0
    jobs = pool.map_unordered(lambda a, job: a.run.remote(*job, parts[job]), ranges)
    for row in jobs:
        result.tiles_run += row["tiles_run"]
        panel = panels[row["panel"]]
        rows = _rows(grid, row["start"], row["stop"])
        area_done += (rows.stop - rows.start) * (panel.own1 - panel.own0)
        if on_progress is not None:
            share = area_done / (grid.width * grid.height)
            km2 = result.km2 * share if result.km2 is not None else None
            on_progress(Progress(round(share * grid.tiles), grid.tiles, km2, result.km2))
    _merge(grid, panels, profile, meta.num_classes, stem, parts, options.probabilities)
    targets = output_paths(stem, options.probabilities)
    mask_partial = Path(f"{stem}_mask.partial.tif")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        write_mask_cog(mask_partial, targets[0], meta.classes, meta.palette, tags)
        if options.probabilities:
            prob_partial = Path(f"{stem}_prob.partial.tif")
            write_probability_cog(prob_partial, targets[1], meta.classes, tags)
            prob_partial.unlink()
    mask_partial.unlink()
    result.outputs = targets
    result.seconds = time.perf_counter() - start_time
    return result


def _rows(grid: Grid, start: int, stop: int) -> range:
    """The raster rows strips ``start .. stop - 1`` finish."""
    return range(grid.ys[start], grid.ys[stop] if stop < len(grid.ys) else grid.height)


def _merge(grid, panels, profile, num_classes, stem, parts, probabilities) -> None:
    """Copy each part's rows and panel columns into ``STEM_mask.partial.tif`` (and
    probabilities); drop the parts."""
    import rasterio
    from rasterio.windows import Window

    from service.geo.resume import create_raster, write_rows

    kinds = [("mask", 1, 255)] + ([("prob", num_classes, None)] if probabilities else [])
    for kind, count, nodata in kinds:
        target = Path(f"{stem}_{kind}.partial.tif")
        create_raster(target, profile, count, nodata)
        for (panel, start, stop), name in sorted(parts.items()):
            part, own0, own1 = Path(f"{name}_{kind}.tif"), panels[panel].own0, panels[panel].own1
            rows = _rows(grid, start, stop)
            with rasterio.open(part) as src:
                for y in range(rows.start, rows.stop, MERGE_ROWS):
                    height = min(MERGE_ROWS, rows.stop - y)
                    data = src.read(window=Window(own0, y, own1 - own0, height))
                    write_rows(target, y, data, own0)
            part.unlink()
