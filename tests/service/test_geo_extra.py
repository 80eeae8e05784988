"""Without the ``geo`` extra the service still imports, and a GeoTIFF gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest


def test_geotiff_without_rasterio_names_the_extra(python_without, tmp_path) -> None:
    rasterio = pytest.importorskip("rasterio")  # only to write the test raster
    from affine import Affine

    path = tmp_path / "ortho.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 48, "count": 3, "dtype": "uint8"}
    transform = Affine(0.5, 0.0, 300_000.0, 0.0, -0.5, 2_790_000.0)
    with rasterio.open(path, "w", crs="EPSG:32640", transform=transform, **profile) as dst:
        dst.write(np.full((3, 48, 64), 90, dtype=np.uint8))
    code = f"""
import service.geo.run, service.commands.predict_geo  # import without rasterio
from fcn.cli import main
raise SystemExit(main(["predict", "default", {str(path)!r}, "--out", {str(tmp_path / "out")!r}]))
"""
    result = python_without(code, blocked=("rasterio", "rio_cogeo"))
    assert result.returncode == 2, result.stderr
    assert "pip install 'fcnseg[geo]'" in result.stderr
