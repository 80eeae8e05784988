"""``fcn predict --engine ray`` on a GeoTIFF: one raster's tile rows across workers, same bytes."""

from __future__ import annotations

import pytest
import rasterio

from fcn.cli import main
from service.geo.ray import split_strips
from service.geo.tiled import Grid, halo_start

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
