"""Peak RSS, cores used and km^2/hour of ``fcn predict`` on georeferenced rasters, and the seam check.

Each raster is built by bench/make_geo_rasters.py (Dubai mosaic, 0.5 m/pixel, EPSG:32640,
nodata gaps) unless it exists, then segmented by ``fcn predict default RASTER --out DIR`` in a
child process whose peak RSS and CPU time come from ``getrusage(RUSAGE_CHILDREN)`` (measured
by a fresh wrapper per run, so one run's peak never hides another's). The COG is validated
with rio-cogeo. The seam check (``--seams``) segments a 3 MP gap-free mosaic in process and
compares the mask with the engine's untiled and tiled masks, separately in the 32-pixel bands
around window borders.

    python bench/geo_bench.py --seams                  # 64 MP + seams -> bench/results/geo_bench.json
    python bench/geo_bench.py --big                    # also 24,000 x 24,000 (0.58 GP)
    python bench/geo_bench.py --sizes wide             # 24,000 x 1,536: the big one's width

Results are rewritten after every run, so a long run that is stopped keeps what finished.
Run alone (``flock /tmp/fcn-heavy.lock ...``): the figures are the machine's, not a share of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._cpu import cpu_info  # noqa: E402
from bench._paths import shown  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "geo_bench.json"
# "wide": as wide as the 0.58 GP raster but 1,536 rows: memory depends on the width (one strip
# of tile rows is held), so its peak RSS is the big raster's, in minutes instead of an hour.
SIZES = {"64MP": (8000, 8000), "0.58GP": (24000, 24000), "wide": (24000, 1536)}
# Runs fcn predict as its child and prints that child's rusage: peak RSS (KiB), CPU seconds.
WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': code, 'maxrss_kib': r.ru_maxrss, 'cpu_s': r.ru_utime + r.ru_stime}))\n"
)


def run_predict(raster: Path, out: Path, extra: list[str]) -> dict:
    """One ``fcn predict`` child: its wall time, peak RSS, cores busy and reported km^2/hour."""
    command = [sys.executable, "-m", "fcn", "predict", "default", str(raster), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wall = time.perf_counter() - start
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    if usage["rc"] != 0:
        raise RuntimeError(f"fcn predict failed ({usage['rc']}): {proc.stderr[-2000:]}")
    line = next(x for x in proc.stderr.splitlines() if "km^2/hour" in x)
    km2, rate = re.search(r"([\d.]+) km\^2 at ([\d.]+) km\^2/hour", line).groups()
    tiles = re.search(r"(\d+) tiles \((\d+) run", line).groups()
    return {
        "seconds": round(wall, 1),
        "peak_rss_mb": round(usage["maxrss_kib"] / 1024, 1),
        "cores_busy": round(usage["cpu_s"] / wall, 2),
        "km2": float(km2),
        "km2_per_hour": float(rate),
        "tiles": int(tiles[0]),
        "tiles_run": int(tiles[1]),
        "report": line.split(": ", 1)[1],
    }


def bench_size(name: str, folder: Path) -> dict:
    from bench.make_geo_rasters import make_raster
    from service.geo.cog import validate

    width, height = SIZES[name]
    raster = folder / f"dubai_{width}x{height}.tif"
    if not raster.exists():
        make_raster(raster, width, height)
    out = folder / f"out_{name}"
    result = run_predict(raster, out, [])
    valid, errors, _ = validate(out / f"{raster.stem}_mask.tif")
    megapixels = width * height / 1e6
    return {
        "raster": name,
        "width": width,
        "height": height,
        "megapixels": round(megapixels, 1),
        "mp_per_s": round(megapixels / result["seconds"], 3),
        "cog_valid": valid and not errors,
        **result,
    }


def seam_check() -> dict:
    """Geo mask vs the engine's untiled and tiled masks on a 3 MP gap-free mosaic."""
    import rasterio

    from bench.make_geo_rasters import make_raster
    from service.engine import Engine
    from service.engine.config import RASTER_DEFAULTS, EngineConfig
    from service.geo.grid import Grid, border_bands
    from service.geo.run import GeoOptions, segment_raster
    from service.models import parse_spec

    windows = {k: RASTER_DEFAULTS[k] for k in ("tile_size", "tile_overlap")}  # fcn predict's
    engine = Engine.load(parse_spec("default").path, EngineConfig(concurrency=2, **windows))
    with tempfile.TemporaryDirectory() as tmp:
        path = make_raster(Path(tmp) / "seams.tif", 2000, 1500, gap_every=0)
        result = segment_raster(engine, path, Path(tmp) / "seams", GeoOptions())
        with rasterio.open(result.outputs[0]) as mask, rasterio.open(path) as src:
            geo, pixels = mask.read(1), src.read().transpose(1, 2, 0)
    untiled = engine.predict(pixels, tiled=False)
    tiled = engine.predict(pixels, tiled=True)
    bands = border_bands(Grid.of_config(1500, 2000, engine.config, engine.metadata.size_multiple))
    return {
        "raster": "2000 x 1500 Dubai mosaic, no gaps",
        "tile": engine.tile_size,
        "overlap": engine.config.tile_overlap,
        "vs_engine_tiled": float((geo == tiled).mean()),
        "vs_untiled": float((geo == untiled).mean()),
        "vs_untiled_border_bands": float((geo[bands] == untiled[bands]).mean()),
        "vs_untiled_elsewhere": float((geo[~bands] == untiled[~bands]).mean()),
        "border_band_share": float(bands.mean()),
        "served": f"{engine.backend_name} {engine.precision}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", action="store_true", help="also the 24,000 x 24,000 raster")
    parser.add_argument(
        "--sizes", default=None, help=f"comma-separated rasters to run, of {', '.join(SIZES)}"
    )
    parser.add_argument("--seams", action="store_true", help="run the seam check too")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fcn-geo")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    for run in report.get("runs", []):  # earlier runs keep the load and command of their time
        run.setdefault("loadavg", report.get("cpu", {}).get("loadavg"))
        run.setdefault("command", report.get("command"))
    report.update(
        {
            "command": "bench/geo_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu": cpu_info(),
            "folder": shown(args.folder),
        }
    )
    runs = {r["raster"]: r for r in report.get("runs", [])}
    names = ["64MP"] + (["0.58GP"] if args.big else [])
    if args.sizes:
        names = args.sizes.split(",")
    if args.seams:
        report["seams"] = seam_check()
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name in names:
        load = [round(x, 2) for x in os.getloadavg()]
        runs[name] = {
            **bench_size(name, args.folder),
            "loadavg": load,
            "command": report["command"],
        }
        report["runs"] = list(runs.values())
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(runs[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
