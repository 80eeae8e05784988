"""Tiled vs untiled agreement of the default model, by window placement and window size.

The seam check of issue 32: on rasters that fit in memory, the tiled mask should agree with one
untiled run of the whole image on >= 99.5% of pixels, with the 32-pixel bands around window
borders measured on their own. For each Dubai mosaic (bench/make_geo_rasters.py, no nodata
gaps) this measures, with the model as served (``auto``: the runtime and precision are
recorded) and with its fp32 source (models/default/default.fp16.onnx on ONNX Runtime):

* the model's own noise floor: untiled INT8 vs untiled fp32;
* for each window size/overlap, windows placed as before (evenly, anywhere: ``free``) and on
  the model's stride (``stride``, what the engine does now): agreement with the untiled mask
  overall, in the border bands, elsewhere, and where the untiled top-2 softmax margin is
  above 0.1; seconds per megapixel of the tiled run (in process, one window at a time);
* with ``--rss``, peak RSS and speed of ``fcn predict`` (the geo path, two streams unless
  ``--rss-flags`` says otherwise) on the rasters of bench/geo_bench.py named by ``--rss-sizes``
  (default: the 8,000 x 8,000 mosaic) for each ``--rss`` window setting.

``--mosaics``, ``--windows`` and ``--models`` run part of the rows; they replace the same rows
of the results file and keep the others (each row records its date).

    python bench/seam_bench.py                      # -> bench/results/seam_bench.json
    python bench/seam_bench.py --rss 512/128,1024/256 --rss-sizes 64MP,wide --skip-agreement
    python bench/seam_bench.py --mosaics second --windows 1024/256   # only those rows, merged

Run alone (``flock /tmp/fcn-heavy.lock ...``): the timings are the machine's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._cpu import cpu_info, cpu_label  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "seam_bench.json"
FP32_SOURCE = ROOT / "models" / "default" / "default.fp16.onnx"
# name -> (width, height, make_raster options): the test's mosaic, and one with other photos
# in other places (smaller cells, another size) so that a setting is not tuned to one image.
MOSAICS = {
    "test 2000 x 1500": (2000, 1500, {"gap_every": 0}),
    "second 2400 x 1800": (2400, 1800, {"gap_every": 0, "cell": 600}),
}
# (model, tile, overlap, placement): windows anywhere ("free", as before) or on the stride.
STRIDE_WINDOWS = (
    (512, 128),
    (512, 192),
    (768, 192),
    (768, 256),
    (768, 320),
    (768, 352),
    (896, 256),
    (896, 320),
    (1024, 256),
    (1024, 384),
)
ROWS = (
    ("served", 512, 128, "free"),
    *(("served", t, o, "stride") for t, o in STRIDE_WINDOWS),
    ("fp32", 512, 128, "free"),
    ("fp32", 512, 128, "stride"),
    ("fp32", 768, 192, "stride"),
)
MARGIN = 0.1


def tiled_logits(engine, pixels: np.ndarray, tile: int, overlap: int, multiple: int):
    """The engine's blended windows with starts on multiples of ``multiple`` (1: anywhere)."""
    from service.engine.tiling import blended_strips

    height, width = pixels.shape[:2]
    out = np.empty((engine.metadata.num_classes, height, width), dtype=np.float32)

    def run_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        window = engine.normalise(pixels[y : y + h, x : x + w])
        return np.array(engine.run_normalised(window[None])[0])

    k = engine.metadata.num_classes
    for y0, total, weight in blended_strips(height, width, k, tile, overlap, run_tile, multiple):
        np.divide(total, weight, out=out[:, y0 : y0 + weight.shape[0]])
    return out


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Per pixel: softmax probability of the top class minus that of the second."""
    shifted = logits - logits.max(axis=0, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=0, keepdims=True)
    top2 = np.sort(probs, axis=0)[-2:]
    return top2[1] - top2[0]


def compare(mask: np.ndarray, untiled: np.ndarray, bands: np.ndarray, sure: np.ndarray) -> dict:
    same = mask == untiled
    return {
        "all": float(same.mean()),
        "border_bands": float(same[bands].mean()),
        "elsewhere": float(same[~bands].mean()),
        "margin_above": float(same[sure].mean()),
    }


def row_key(row) -> tuple:
    if isinstance(row, dict):
        return row["model"], row["tile"], row["overlap"], row["placement"]
    return tuple(row)


def merge_rows(previous: list[dict], fresh: list[dict]) -> list[dict]:
    """``fresh`` replaces the earlier rows of the same key; ROWS order, unknown keys last."""
    rows = {row_key(r): r for r in previous} | {row_key(r): r for r in fresh}
    order = {row_key(r): i for i, r in enumerate(ROWS)}
    return sorted(rows.values(), key=lambda r: order.get(row_key(r), len(order)))


def measure_mosaic(engines: dict, pixels: np.ndarray, rows, previous: dict) -> dict:
    """The comparisons of ``rows`` for one mosaic (see the module docstring), merged into the
    ``previous`` result of that mosaic (its other rows kept, with the date they were run)."""
    from service.geo.grid import Grid, border_bands

    height, width = pixels.shape[:2]
    served = engines["served"]
    multiple = served.metadata.size_multiple
    logits = {name: e.logits(pixels, tiled=False) for name, e in engines.items()}
    untiled = {name: v.argmax(axis=0) for name, v in logits.items()}
    sure = top2_margin(logits["served"]) > MARGIN
    result = {**previous, "margin_share": float(sure.mean()), "rows": previous.get("rows", [])}
    if "fp32" in untiled:
        result["untiled_int8_vs_fp32"] = float((untiled["served"] == untiled["fp32"]).mean())
    for name, tile, overlap, placement in rows:
        step = multiple if placement == "stride" else 1
        bands = border_bands(Grid.of(height, width, tile, overlap, step))
        start = time.perf_counter()
        mask = tiled_logits(engines[name], pixels, tile, overlap, step).argmax(axis=0)
        seconds = time.perf_counter() - start
        row = {
            "model": name,
            "tile": tile,
            "overlap": overlap,
            "placement": placement,
            **compare(mask, untiled[name], bands, sure),
            "s_per_mp": round(seconds / (height * width / 1e6), 2),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        result["rows"] = merge_rows(result["rows"], [row])
        print(json.dumps(row), flush=True)
    return result


def check_engine_matches(engine, pixels: np.ndarray) -> bool:
    """The engine's own tiled mask is the bench's ``stride`` placement (what it measures)."""
    tile, overlap = engine.tile_size, engine.config.tile_overlap
    mine = tiled_logits(engine, pixels, tile, overlap, engine.metadata.size_multiple)
    return bool((engine.predict(pixels, tiled=True) == mine.argmax(axis=0)).all())


def load_engines(fp32: bool = True) -> dict:
    """The served model; its fp32 source too unless no fp32 row is asked for."""
    from service.engine import Engine
    from service.engine.config import EngineConfig
    from service.models import parse_spec

    engines = {"served": Engine.load(parse_spec("default").path, EngineConfig(concurrency=1))}
    if fp32:
        config = EngineConfig(concurrency=1, backend="ort", precision="fp32")
        engines["fp32"] = Engine.load(FP32_SOURCE, config)
    return engines


def selected_rows(windows: str, models: str) -> list[tuple]:
    """ROWS, kept to the ``--windows`` (e.g. 768/256) and ``--models`` asked for (all if empty)."""
    wanted = {tuple(int(v) for v in w.split("/")) for w in windows.split(",") if w}
    names = {m for m in models.split(",") if m}
    return [
        r for r in ROWS if (not wanted or (r[1], r[2]) in wanted) and (not names or r[0] in names)
    ]


def rss_runs(
    settings: list[tuple[int, int]], folder: Path, sizes: list[str], extra: list[str]
) -> list[dict]:
    """``fcn predict`` per raster of bench/geo_bench.py and window setting, the settings run
    one after the other on each raster: peak RSS, s/MP, km^2/hour, cores busy."""
    import os
    import shutil

    from bench.geo_bench import SIZES, run_predict
    from bench.make_geo_rasters import make_raster

    runs = []
    for size in sizes:
        width, height = SIZES[size]
        raster = folder / f"dubai_{width}x{height}.tif"
        if not raster.exists():
            make_raster(raster, width, height)
        for tile, overlap in settings:
            flags = ["--tile-size", str(tile), "--tile-overlap", str(overlap), *extra]
            out = folder / f"seam_rss_{size}_{tile}_{overlap}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resumed one
            load = [round(x, 2) for x in os.getloadavg()]
            result = run_predict(raster, out, flags)
            run = {"raster": size, "tile": tile, "overlap": overlap, "flags": extra, **result}
            run["loadavg"] = load
            run["megapixels"] = round(width * height / 1e6, 1)
            run["s_per_mp"] = round(result["seconds"] / run["megapixels"], 3)
            runs.append(run)
            print(json.dumps(run), flush=True)
    return runs


def print_table(report: dict) -> None:
    print(f"CPU: {cpu_label(report['cpu'])}; served: {report.get('served', '-')}")
    for name, mosaic in report.get("mosaics", {}).items():
        floor = mosaic.get("untiled_int8_vs_fp32")
        print(f"\n{name}: untiled int8 vs fp32 {'-' if floor is None else f'{floor:.4f}'}")
        print("model  window   placement  all     bands   else    margin  s/MP")
        for r in mosaic["rows"]:
            print(
                f"{r['model']:<6} {r['tile']}/{r['overlap']:<4} {r['placement']:<10} "
                f"{r['all']:.4f}  {r['border_bands']:.4f}  {r['elsewhere']:.4f}  "
                f"{r['margin_above']:.4f}  {r['s_per_mp']}"
            )
    for r in report.get("rss", []):
        print(
            f"fcn predict {r.get('raster', '64MP')} {r['tile']}/{r['overlap']}: "
            f"{r['peak_rss_mb']} MB, {r['s_per_mp']} s/MP, {r['cores_busy']} cores"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rss", default="", help="window settings for fcn predict, e.g. 512/128")
    parser.add_argument(
        "--rss-sizes", default="64MP", help="rasters of bench/geo_bench.py for --rss: 64MP,wide"
    )
    parser.add_argument(
        "--rss-flags", default="", help="more fcn predict flags, e.g. '--concurrency 1'"
    )
    parser.add_argument("--skip-agreement", action="store_true", help="only the --rss runs")
    parser.add_argument("--windows", default="", help="only these rows' windows, e.g. 768/256")
    parser.add_argument("--models", default="", help="only these models' rows: served, fp32")
    parser.add_argument("--mosaics", default="", help="only mosaics named so, e.g. second")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fcn-geo")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report.update(
        {
            "command": "bench/seam_bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpu": cpu_info(),
            "margin": MARGIN,
        }
    )
    if not args.skip_agreement:
        import rasterio

        from bench.make_geo_rasters import make_raster

        rows = selected_rows(args.windows, args.models)
        engines = load_engines(fp32=any(r[0] == "fp32" for r in rows))
        served = engines["served"]
        report["served"] = f"{served.backend_name} {served.precision}"
        report.setdefault("mosaics", {})
        for name, (width, height, options) in MOSAICS.items():
            if args.mosaics and not any(m in name for m in args.mosaics.split(",")):
                continue
            path = args.folder / f"seams_{width}x{height}.tif"
            if not path.exists():
                make_raster(path, width, height, **options)
            with rasterio.open(path) as src:
                pixels = src.read().transpose(1, 2, 0)
            previous = report["mosaics"].get(name, {})
            report["mosaics"][name] = measure_mosaic(engines, pixels, rows, previous)
            if not args.windows:  # a partial run keeps the earlier check
                report["engine_is_stride_placement"] = check_engine_matches(served, pixels)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.rss:
        settings = [tuple(int(v) for v in s.split("/")) for s in args.rss.split(",")]
        extra = args.rss_flags.split()
        fresh = rss_runs(settings, args.folder, args.rss_sizes.split(","), extra)

        def key(run: dict) -> tuple:
            return run["raster"], run["tile"], run["overlap"], tuple(run["flags"])

        ran = {key(f) for f in fresh}
        kept = [r for r in report.get("rss", []) if key(r) not in ran]
        report["rss"] = kept + fresh  # other settings' runs stay, with their loadavg
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
