"""IoU per class of the ``polygons`` format, rasterised back, on real masks.

For each of the 16 Dubai validation label masks and the bundled model's masks of the same
photographs, every class present is traced, simplified at each tolerance, rasterised back with
shapely (a pixel is in when its centre is) and compared with the mask. Prints the worst class
per image and tolerance; writes every figure to ``bench/results/polygons_iou.json`` (after
each image, so an interrupted run keeps what it measured).

Only pixels near a label boundary are tested with shapely; the others keep their label. That
is exact, not an estimate: unsimplified outlines give back the mask (tests/service/
test_formats.py checks it pixel by pixel), and Douglas-Peucker leaves every point between a
chord and the outline it replaces within the tolerance of that outline, so a pixel whose centre
is farther than that from every boundary cannot change side. The tests also rasterise every
pixel of three of these masks, with shapely and with Pillow.

    flock /tmp/fcn-heavy.lock python bench/polygons_iou.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from shapely.geometry import MultiPolygon, Polygon

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._cpu import cpu_info  # noqa: E402
from bench._paths import SHARED_DATA, shown  # noqa: E402
from service.engine import Engine  # noqa: E402
from service.formats.polygons import polygons  # noqa: E402

VAL = SHARED_DATA / "dubai_aerial" / "val"
ASSET = ROOT / "service" / "assets" / "default.onnx"
TOLERANCES = (0.5, 1.0)
SOURCES = ("label", "bundled model")


def near_boundary(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (Chebyshev) of a pixel with another label or of the image's
    edge (outlines run along it too)."""
    band = np.zeros(mask.shape, bool)
    band[[0, -1], :] = band[:, [0, -1]] = True
    rows, cols = mask[1:] != mask[:-1], mask[:, 1:] != mask[:, :-1]
    band[1:] |= rows
    band[:-1] |= rows
    band[:, 1:] |= cols
    band[:, :-1] |= cols
    for _ in range(radius):
        grown = band.copy()
        grown[1:] |= band[:-1]
        grown[:-1] |= band[1:]
        wide = grown.copy()
        wide[:, 1:] |= grown[:, :-1]
        wide[:, :-1] |= grown[:, 1:]
        band = wide
    return band


def class_iou(mask: np.ndarray, tolerance: float) -> dict[int, dict]:
    ys, xs = np.nonzero(near_boundary(mask, int(np.ceil(tolerance)) + 1))
    out = {}
    for k in np.unique(mask).tolist():
        truth = mask == k
        rings = polygons(truth, tolerance)
        shape = MultiPolygon([Polygon(p[0], p[1:]) for p in rings.polygons()])
        back = truth.copy()
        back[ys, xs] = shapely.contains_xy(shape, xs + 0.5, ys + 0.5)
        out[k] = {
            "pixels": int(truth.sum()),
            "iou": float((back & truth).sum() / (back | truth).sum()),
            "points": int(len(rings.points)),
        }
    return out


def write(out: Path, rows: list[dict]) -> None:
    summary = {}
    for source in SOURCES:
        for tolerance in TOLERANCES:
            ious = [
                c["iou"]
                for r in rows
                if r["mask"] == source and r["tolerance"] == tolerance
                for c in r["classes"].values()
            ]
            if not ious:
                continue
            summary[f"{source} @ {tolerance}"] = {
                "min_iou": min(ious),
                "classes_below_0.98": sum(i < 0.98 for i in ious),
                "classes": len(ious),
            }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_info(),
        "images": sorted({r["image"] for r in rows}),
        "summary": summary,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "polygons_iou.json"
    )
    args = parser.parse_args()
    engine = Engine.load(ASSET)
    rows = []
    for label in sorted((VAL / "masks").glob("*.png")):
        photo = VAL / "images" / f"{label.stem}.jpg"
        masks = {
            "label": np.asarray(Image.open(label)),
            "bundled model": engine.predict(engine.decode(photo)),
        }
        for source, mask in masks.items():
            for tolerance in TOLERANCES:
                per_class = class_iou(mask, tolerance)
                worst = min(per_class, key=lambda k: per_class[k]["iou"])
                rows.append(
                    {
                        "image": shown(photo),
                        "mask": source,
                        "size": list(mask.shape),
                        "tolerance": tolerance,
                        "classes": per_class,
                    }
                )
                print(
                    f"{label.stem:<10} {source:<14} tol {tolerance:<4} worst class {worst:>3} "
                    f"({per_class[worst]['pixels']} px) IoU {per_class[worst]['iou']:.4f}",
                    flush=True,
                )
        write(args.out, rows)
    for name, s in json.loads(args.out.read_text())["summary"].items():
        print(
            f"{name}: min IoU {s['min_iou']:.4f}, {s['classes_below_0.98']}/{s['classes']} below 0.98"
        )
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
