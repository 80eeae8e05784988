"""``fcn predict --engine ray`` on a GeoTIFF: one raster's tile rows across workers, same bytes."""

from __future__ import annotations

import pytest
import rasterio

from fcn.cli import main
from service.geo.grid import Grid, halo_start
from service.geo.ray import split_strips

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'fcnseg[ray]')")


def test_split_strips_covers_every_strip_once() -> None:
    assert split_strips(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert split_strips(2, 8) == [(0, 1), (1, 2)]


def test_halo_reaches_back_as_far_as_windows_overlap() -> None:
    grid = Grid.of(1000, 500, 256, 64)
    for start in range(1, len(grid.ys)):
        first = halo_start(grid, start)
        assert grid.ys[first] + grid.tile_h > grid.ys[start]
        assert first == 0 or grid.ys[first - 1] + grid.tile_h <= grid.ys[start]


def read_all(path) -> bytes:
    with rasterio.open(path) as dataset:
        return dataset.read().tobytes()


def test_ray_writes_the_same_rasters_as_the_local_engine(make_raster, tmp_path, capsys) -> None:
    import ray

    source = make_raster("ray", 900, 1100)
    common = ["--backend", "ort", "--intra-op-threads", "1", "--tile-size", "256"]
    common += ["--tile-overlap", "64", "--probabilities"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["predict", "default", str(source), "-o", str(local), *common]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        argv = ["predict", "default", str(source), "-o", str(remote), *common]
        code = main([*argv, "--engine", "ray", "--actors", "2"])
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(p.name for p in remote.iterdir()) == ["ray_mask.tif", "ray_prob.tif"]
    for name in ("ray_mask.tif", "ray_prob.tif"):
        assert read_all(remote / name) == read_all(local / name)
    with rasterio.open(remote / "ray_mask.tif") as cog:
        assert cog.crs.to_epsg() == 32640 and cog.colormap(1)[0][:3] == (60, 16, 152)


def test_ray_splits_column_panels_to_the_same_bytes(make_raster, tmp_path) -> None:
    import ray

    from service.engine import Engine
    from service.engine.config import EngineConfig
    from service.geo.ray import segment_raster_ray
    from service.geo.run import GeoOptions, segment_raster
    from service.models import parse_spec

    source = make_raster("ray", 900, 1100)
    model = parse_spec("default").path
    config = EngineConfig(backend="ort", intra_op_threads=1, tile_size=256, tile_overlap=64)
    options = GeoOptions(probabilities=True, panel_width=400)
    assert len(Grid.of(1100, 900, 256, 64).panels(400)) == 3
    local = segment_raster(Engine.load(model, config), source, tmp_path / "local" / "r", options)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = segment_raster_ray(
            model, config, source, tmp_path / "ray" / "r", options, actors=2
        )
    finally:
        ray.shutdown()
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["r_mask.tif", "r_prob.tif"]
    for a, b in zip(local.outputs, remote.outputs, strict=True):
        assert read_all(a) == read_all(b)
