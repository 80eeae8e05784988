"""Georeferenced rasters built from the Dubai photos (bench/make_geo_rasters.py) and engines.

Everything here needs rasterio (the ``geo`` extra) and the real data in ``../shared/data``:
missing, the tests skip (fail under ``FCN_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.requirements import ROOT, require_or_skip, shared_data

try:
    import rasterio  # noqa: F401
except ImportError:  # a serve-only install: the geo path is not there to test
    require_or_skip("rasterio is not installed (pip install 'fcnseg[geo]')", module=True)

if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(scope="session")
def dubai() -> Path:
    return shared_data("dubai_aerial")


@pytest.fixture(scope="session")
def make_raster(dubai, tmp_path_factory):
    """``make_raster(name, width, height, **options)``: a cached mosaic GeoTIFF."""
    import make_geo_rasters

    folder = tmp_path_factory.mktemp("geo_rasters")

    def build(name: str, width: int, height: int, **options) -> Path:
        path = folder / f"{name}.tif"
        if not path.exists():
            make_geo_rasters.make_raster(path, width, height, **options)
        return path

    return build


@pytest.fixture(scope="session")
def engine_for():
    """``engine_for(tile_size=512, tile_overlap=128)``: the default model, two streams."""
    from service.engine import Engine
    from service.engine.config import EngineConfig
    from service.models import parse_spec

    cache = {}

    def load(tile_size: int = 512, tile_overlap: int = 128):
        key = (tile_size, tile_overlap)
        if key not in cache:
            config = EngineConfig(
                concurrency=2, intra_op_threads=1, tile_size=tile_size, tile_overlap=tile_overlap
            )
            cache[key] = Engine.load(parse_spec("default").path, config)
        return cache[key]

    return load
