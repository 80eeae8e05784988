"""Georeferenced test rasters from the Dubai aerial tiles (not committed: built on demand).

A mosaic of the 72 Dubai photos (``../shared/data/dubai_aerial``), one per ``cell x cell`` cell,
each cropped or mirrored to fill it, placed at 0.5 m/pixel in UTM zone 40N (EPSG:32640, where
Dubai lies), with nodata gaps: every ``gap_every``-th cell is left empty (value 0, the raster's
nodata; real pixels are lifted to >= 1 so no photo pixel reads as nodata). Written cell row by
cell row, so a gigapixel raster needs no more memory than one row of cells.

Options make the harder inputs of docs/gis.md: ``--dtype uint16 --bits 12`` (values x 16, the
way 12-bit sensors store data), ``--bands 4`` (a synthetic NIR band appended).

    python bench/make_geo_rasters.py OUT.tif --size 8000 8000            # 64 MP
    python bench/make_geo_rasters.py OUT.tif --size 24000 24000          # 0.58 GP
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._paths import SHARED_DATA  # noqa: E402

DUBAI = SHARED_DATA / "dubai_aerial"
CRS = "EPSG:32640"
ORIGIN = (300_000.0, 2_790_000.0)  # west, north (m), inside Dubai's UTM zone
PIXEL_M = 0.5


def tile_paths(root: Path = DUBAI) -> list[Path]:
    """The Dubai photos, in a fixed order."""
    paths = sorted((root / "train" / "images").glob("*.jpg")) + sorted(
        (root / "val" / "images").glob("*.jpg")
    )
    if not paths:
        raise FileNotFoundError(f"no Dubai images under {root}")
    return paths


@lru_cache(maxsize=8)
def _photo(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _fill(photo: np.ndarray, cell: int) -> np.ndarray:
    """Crop to ``cell x cell``, mirroring a photo smaller than that."""
    reps = (-(-cell // photo.shape[0]), -(-cell // photo.shape[1]))
    if reps != (1, 1):
        flipped = [photo, photo[::-1]], [photo[:, ::-1], photo[::-1, ::-1]]
        rows = [
            np.concatenate([flipped[j % 2][i % 2] for j in range(reps[1])], axis=1)
            for i in range(reps[0])
        ]
        photo = np.concatenate(rows, axis=0)
    return photo[:cell, :cell]


def make_raster(
    path: str | Path,
    width: int,
    height: int,
    *,
    cell: int = 1024,
    gap_every: int = 7,
    dtype: str = "uint8",
    bits: int = 8,
    bands: int = 3,
) -> Path:
    """Write the mosaic GeoTIFF at ``path`` (see the module docstring); returns ``path``."""
    import rasterio
    from affine import Affine
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    photos = tile_paths()
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
        "crs": CRS,
        "transform": Affine(PIXEL_M, 0.0, ORIGIN[0], 0.0, -PIXEL_M, ORIGIN[1]),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if bands == 3 and dtype == "uint8":
        profile["photometric"] = "RGB"
    else:  # GDAL would take a 4th 8-bit band for alpha: this one is data (NIR)
        profile["photometric"] = "MINISBLACK"
        profile["alpha"] = "NO"
    scale = 1 << (bits - 8)
    with rasterio.open(path, "w", **profile) as dst:
        for i, y in enumerate(range(0, height, cell)):
            h = min(cell, height - y)
            row = np.zeros((bands, h, width), dtype=dtype)
            for j, x in enumerate(range(0, width, cell)):
                w = min(cell, width - x)
                number = i * 131 + j
                if gap_every and number % gap_every == gap_every - 1:
                    continue  # a nodata gap
                rgb = _fill(_photo(photos[(i * 7 + j * 3) % len(photos)]), cell)[:h, :w]
                rgb = np.maximum(rgb, 1).transpose(2, 0, 1).astype(dtype) * scale
                row[:3, :, x : x + w] = rgb
                if bands > 3:  # a synthetic NIR band: bright on vegetation-ish green
                    row[3:, :, x : x + w] = rgb[1]
            dst.write(row, window=Window(0, y, width, h))
        if bands > 3:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + [
                ColorInterp.undefined
            ] * (bands - 3)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the GeoTIFF to write")
    parser.add_argument("--size", nargs=2, type=int, default=(2000, 1500), metavar=("W", "H"))
    parser.add_argument("--cell", type=int, default=1024)
    parser.add_argument("--gap-every", type=int, default=7, help="every Nth cell nodata (0: none)")
    parser.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    parser.add_argument("--bits", type=int, default=8, help="significant bits (12: values x 16)")
    parser.add_argument("--bands", type=int, choices=(3, 4), default=3)
    args = parser.parse_args(argv)
    make_raster(
        args.out,
        *args.size,
        cell=args.cell,
        gap_every=args.gap_every,
        dtype=args.dtype,
        bits=args.bits,
        bands=args.bands,
    )
    print(f"wrote {args.out} ({args.size[0]} x {args.size[1]}, {args.dtype}, {args.bands} bands)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
