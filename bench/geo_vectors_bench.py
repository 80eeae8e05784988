"""Vectors from a large class raster in bounded memory: time and peak RSS of write_vectors.

Builds class-index GeoTIFFs (uint8, nodata 255, EPSG:32640 at 0.5 m) by tiling the Dubai label
masks (600 x 600 crops, random flips, a nodata band down the left tenth) at each side length,
then runs ``write_vectors`` on each in a fresh process (peak RSS of that process alone) with
blocks of 2048 pixels, GeoPackage, native CRS, tolerance 0. Checks per class that the polygon
area equals the raster's class area.

    python bench/geo_vectors_bench.py --sides 4000 16000   # -> bench/results/geo_vectors_bench.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import cpu_info  # noqa: E402
from _paths import ROOT, SHARED_DATA  # noqa: E402

CELL = 600
CLASSES = ["building", "land", "road", "vegetation", "water", "unlabeled"]


def build(path: Path, side: int, seed: int = 0) -> np.ndarray:
    """Write the mosaic row of cells by row of cells; return the per-class pixel counts."""
    import rasterio
    from affine import Affine
    from PIL import Image

    masks = [
        np.asarray(Image.open(p))[:CELL, :CELL]
        for p in sorted((SHARED_DATA / "dubai_aerial" / "val" / "masks").glob("*.png"))
    ]
    masks = [m for m in masks if m.shape == (CELL, CELL)]
    rng = np.random.default_rng(seed)
    counts = np.zeros(256, np.int64)
    profile = dict(
        driver="GTiff",
        width=side,
        height=side,
        count=1,
        dtype="uint8",
        nodata=255,
        crs="EPSG:32640",
        transform=Affine(0.5, 0, 300_000, 0, -0.5, 2_790_000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as out:
        for row in range(0, side, CELL):
            h = min(CELL, side - row)
            strip = np.empty((h, side), np.uint8)
            for col in range(0, side, CELL):
                cell = masks[rng.integers(len(masks))]
                if rng.random() < 0.5:
                    cell = cell[:, ::-1]
                w = min(CELL, side - col)
                strip[:, col : col + w] = cell[:h, :w]
            strip[:, : side // 10] = 255
            counts += np.bincount(strip.ravel(), minlength=256)
            out.write(strip, 1, window=((row, row + h), (0, side)))
    return counts


def run_one(mask: Path, out: Path) -> dict:
    from service.geo.vectors import write_vectors

    start = time.perf_counter()
    summary = write_vectors(
        mask, out, classes=CLASSES, tolerance_m=0.0, driver="GPKG", crs="native", block_size=2048
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "features": summary.features,
        "blocks": summary.blocks,
        "seam_pieces": summary.seam_pieces,
        "area": summary.area,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[4000, 16000])
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: MASK OUT
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/geo_vectors_bench.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), Path(args.one[1]))))
        return
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sides:
            mask = Path(folder) / f"mask_{side}.tif"
            counts = build(mask, side)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(mask),
                    str(Path(folder) / f"v_{side}.gpkg"),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            result = json.loads(child.stdout)
            worst = max(
                abs(result["area"][str(k)] / (counts[k] * 0.25) - 1)
                for k in range(len(CLASSES))
                if counts[k]
            )
            result.update(
                side=side,
                megapixels=side * side / 1e6,
                km2=round(side * side * 0.25 / 1e6, 2),
                worst_class_area_error=worst,
            )
            result.pop("area")
            runs.append(result)
            print(json.dumps(result))
    args.out.write_text(
        json.dumps({"cpu": cpu_info(), "block_size": 2048, "runs": runs}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
