"""``fcn predict --engine ray`` on a GeoTIFF: one raster's tile rows across workers, same bytes."""

from __future__ import annotations

import json

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


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
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
    assert sorted(p.name for p in remote.iterdir()) == [
        "ray.stac.json",
        "ray_mask.tif",
        "ray_prob.tif",
    ]
    for name in ("ray_mask.tif", "ray_prob.tif"):
        assert read_all(remote / name) == read_all(local / name)
    with rasterio.open(remote / "ray_mask.tif") as cog:
        assert cog.crs.to_epsg() == 32640 and cog.colormap(1)[0][:3] == (60, 16, 152)


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
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
    listing = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert listing == ["r.stac.json", "r_mask.tif", "r_prob.tif"]
    for a, b in zip(local.outputs, remote.outputs, strict=True):
        assert read_all(a) == read_all(b)


def _kill_at(panel: int, index: int):
    """An ``after_strip`` hook that fails the worker once strip ``index`` of ``panel`` is on
    disk (a closure over builtins only: Ray ships it to the actors by value)."""

    def die(strip) -> None:
        if (strip.panel, strip.index) == (panel, index):
            raise RuntimeError(f"killed after strip {index} of panel {panel}")

    return die


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
@pytest.mark.parametrize(
    ("panel_width", "kill", "resumed_by_cli"),
    # one panel in 4 parts, killed after the first strip of the first part, resumed by the CLI;
    # 3 panels of 2 parts, killed after the second strip of panel 0's first part
    [(4096, (0, 0), True), (400, (0, 1), False)],
)
def test_killed_ray_run_resumes_to_the_same_bytes(
    make_raster, tmp_path, capsys, panel_width, kill, resumed_by_cli
) -> None:
    import ray

    from service.engine import Engine
    from service.engine.config import EngineConfig
    from service.geo.ray import segment_raster_ray
    from service.geo.run import GeoOptions, segment_raster
    from service.models import parse_spec

    source = make_raster("ray", 900, 1100)
    model = parse_spec("default").path
    config = EngineConfig(backend="ort", intra_op_threads=1, tile_size=256, tile_overlap=64)
    options = GeoOptions(probabilities=True, panel_width=panel_width, model="default")
    # the reference runs the Ray workers' runtime (auto might pick OpenVINO for it)
    whole = segment_raster(Engine.load(model, config), source, tmp_path / "local" / "ray", options)
    out = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(RuntimeError, match="killed after strip"):
            segment_raster_ray(
                model, config, source, out / "ray", options, actors=2, after_strip=_kill_at(*kill)
            )
        plan = json.loads((out / "ray.ray.json").read_text())
        first = plan["parts"][0]
        assert first[0] == kill[0] and first[1] <= kill[1] < first[2] - 1  # killed mid-part
        assert json.loads((out / "ray.part000.json").read_text()) == {"next": kill[1] + 1}
        assert not (out / "ray_mask.tif").exists()
        if resumed_by_cli:
            common = ["--backend", "ort", "--intra-op-threads", "1", "--tile-size", "256"]
            common += ["--tile-overlap", "64", "--probabilities", "--engine", "ray"]
            argv = ["predict", "default", str(source), "-o", str(out), *common, "--actors", "2"]
            assert main([*argv, "--resume"]) == 0
            assert "resumed after" in capsys.readouterr().err
        else:
            again = segment_raster_ray(model, config, source, out / "ray", options, actors=2)
            assert again.strips_resumed >= kill[1] + 1
            assert 0 < again.tiles_run < whole.tiles_run  # finished strips were not run again
    finally:
        ray.shutdown()
    assert sorted(p.name for p in out.iterdir()) == [
        "ray.stac.json",
        "ray_mask.tif",
        "ray_prob.tif",
    ]
    for name in ("ray_mask.tif", "ray_prob.tif"):
        assert read_all(out / name) == read_all(tmp_path / "local" / name)
