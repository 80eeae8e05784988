"""Encoder timings per output format at 512x512 and 2048x2048, and what probabilities cost.

Masks are the bundled model's on a real Dubai photograph (``../shared/data``), resized to each
side with nearest-neighbour sampling (class regions of real shape, not noise), plus the model's
logits for the argmax-with-probability comparison. Every encoder in ``service.formats.registry.ENCODERS``
runs on the same mask, interleaved round-robin so a busy machine slows all of them alike; the
table prints medians and the JSON (``bench/results/formats_bench.json``) keeps every sample,
the CPU model and its ISA flags.

    flock /tmp/fcn-heavy.lock python bench/formats_bench.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._cpu import cpu_info  # noqa: E402
from bench._paths import SHARED_DATA, shown  # noqa: E402
from service.engine import Engine, argmax_classes, argmax_confidence  # noqa: E402
from service.formats.registry import ENCODERS, EncodeRequest  # noqa: E402

PHOTO = SHARED_DATA / "dubai_aerial" / "val" / "images" / "tile8_004.jpg"
ASSET = ROOT / "service" / "assets" / "default.onnx"
SIDES = (512, 2048)


def interleaved(jobs: dict, repeats: int) -> dict[str, list[float]]:
    """Milliseconds per call of each job, ``repeats`` rounds, one call of each per round."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for job in jobs.values():  # warm-up
        job()
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def run(side: int, engine: Engine, photo: np.ndarray, repeats: int) -> dict:
    image = np.asarray(Image.fromarray(photo).resize((side, side), Image.BILINEAR))
    logits = engine.logits(image)
    mask, confidence = argmax_confidence(logits, engine.mask_dtype)
    request = EncodeRequest(
        mask=mask,
        pixels=image,
        palette=engine.metadata.palette,
        classes=engine.metadata.classes,
        info={"model": "default"},
        confidence=confidence,
    )
    jobs = {
        f"encode {name}": (lambda e=encoder: e.encode(request))
        for name, encoder in ENCODERS.items()
    }
    jobs["argmax"] = lambda: argmax_classes(logits, engine.mask_dtype)
    jobs["argmax + probability"] = lambda: argmax_confidence(logits, engine.mask_dtype)
    times = interleaved(jobs, repeats)
    sizes = {name: len(encoder.encode(request)) for name, encoder in ENCODERS.items()}
    rows = []
    for name, samples in times.items():
        fmt = name.removeprefix("encode ")
        rows.append(
            {
                "side": side,
                "job": name,
                "median_ms": statistics.median(samples),
                "samples_ms": samples,
                "bytes": sizes.get(fmt),
            }
        )
    argmax = statistics.median(times["argmax"])
    with_probability = statistics.median(times["argmax + probability"])
    return {
        "side": side,
        "classes_present": int(np.unique(mask).size),
        "rows": rows,
        "probability_over_argmax": with_probability / argmax,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "formats_bench.json"
    )
    args = parser.parse_args()
    engine = Engine.load(ASSET)
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    results = [run(side, engine, photo, args.repeats) for side in SIDES]
    print(f"{'side':>5} {'job':<24} {'median ms':>10} {'bytes':>10}")
    for result in results:
        for row in result["rows"]:
            size = "" if row["bytes"] is None else f"{row['bytes']:,}"
            print(f"{row['side']:>5} {row['job']:<24} {row['median_ms']:>10.1f} {size:>10}")
        print(
            f"{result['side']:>5} argmax + probability / argmax: "
            f"{result['probability_over_argmax']:.2f}x ({result['classes_present']} classes present)"
        )
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_info(),
        "machine": {"numpy": np.__version__, "loadavg_at_end": os.getloadavg()},
        "photo": shown(PHOTO),
        "model": shown(ASSET),
        "repeats": args.repeats,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
