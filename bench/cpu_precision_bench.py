"""The default model on this CPU: every backend x precision, speed at 512x512 and mIoU vs fp32.

INT8 results hold only for the CPU they ran on (AVX2 multiplies u8 x s8 into int16 and can
saturate; VNNI does not), so this bench is run once per CPU class and each run writes its own
file, named after the class: ``bench/results/cpu_precision_<class>.json`` (``avx2``,
``avx512-vnni``, ``amx``...). Rows:

* ``ort fp32`` / ``openvino fp32``: the fp32 model rebuilt from ``models/default/default.fp16.onnx``;
* ``ort int8`` / ``openvino int8``: the bundled file (``service/assets/default.onnx``: 7-bit
  weights, reduced range);
* ``... int8 full range``: the same fp32 quantized with 8-bit weights, as the bundle was before
  (the file from git, ``--old-int8``), to show what reduced range buys on this CPU;
* ``openvino bf16``: only on a CPU with native bf16;
* ``auto``: what ``--precision auto`` serves from the bundled file here (a fresh decision cache:
  its reference check and timing), with its reason.

Speed: ``Engine.run_normalised`` on one 512x512 input, ``--reps`` interleaved runs, median.
Accuracy: every labelled pixel of the 16 Dubai validation images at full size through
``Engine.predict`` (tiling as served), mIoU in points and its delta to ORT fp32.

    flock /tmp/fcn-heavy.lock .venv/bin/python bench/cpu_precision_bench.py \\
        --old-int8 old.int8.onnx   # git show 3570dc3:service/assets/default.onnx > old.int8.onnx

Prints the table and writes the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _cpu import cpu_info, cpu_label
from _paths import shown

from service.backends import cpu_has_bf16
from service.backends.cpu import cpu_flags
from service.engine import Engine, EngineConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dubai_aerial"
SOURCE = ROOT / "models" / "default" / "default.fp16.onnx"
BUNDLED = ROOT / "service" / "assets" / "default.onnx"


def cpu_class() -> str:
    flags = cpu_flags()
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "avx512-vnni" if "avx512f" in flags else "avx-vnni"
    return "avx2" if "avx2" in flags else "other"


def miou_of(engine: Engine, dataset, info) -> tuple[float, list[float], list[np.ndarray]]:
    import torch

    from training.loop.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(info.num_classes)
    masks = []
    for index in range(len(dataset)):
        image, mask = dataset.load(index)
        got = engine.predict(image)
        masks.append(got)
        matrix.update(
            torch.from_numpy(got.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
        )
    result = matrix.compute(info.classes)
    return 100 * result.miou, [round(100 * float(x), 2) for x in result.per_class_iou], masks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--old-int8", type=Path, help="the full-range INT8 file to compare")
    parser.add_argument(
        "--out", type=Path, help="default: bench/results/cpu_precision_<class>.json"
    )
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"cpu_precision_{cpu_class()}.json"
    work = Path(tempfile.mkdtemp(prefix="cpu-precision-"))
    decisions = str(work / "decisions.json")  # auto decides afresh
    from training.evaluate import onnx_dataset
    from training.export.recover import rebuild_from_source

    fp32 = rebuild_from_source(SOURCE, work / "default.onnx")
    old = None
    if args.old_int8 is not None:
        old = work / "old.int8.onnx"
        shutil.copyfile(args.old_int8, old)
    rows: list[tuple[str, Path, str, str]] = [
        ("ort fp32", fp32, "ort", "fp32"),
        ("openvino fp32", fp32, "openvino", "fp32"),
        ("ort int8", BUNDLED, "ort", "int8"),
        ("openvino int8", BUNDLED, "openvino", "int8"),
    ]
    if old is not None:
        rows += [
            ("ort int8 full range", old, "ort", "int8"),
            ("openvino int8 full range", old, "openvino", "int8"),
        ]
    if cpu_has_bf16():
        rows.append(("openvino bf16", fp32, "openvino", "bf16"))
    engines = {name: Engine.load(p, EngineConfig(backend=b, precision=q)) for name, p, b, q in rows}
    start = time.perf_counter()
    auto = Engine.load(BUNDLED, EngineConfig(decision_cache=decisions))
    auto_load_s = time.perf_counter() - start
    engines["auto"] = auto

    x = np.random.default_rng(0).standard_normal((1, 3, 512, 512), np.float32)
    for engine in engines.values():
        engine.run_normalised(x)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for rep in range(args.reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            engines[name].run_normalised(x)
            samples[name].append(1e3 * (time.perf_counter() - t0))

    reference = engines["ort fp32"]
    dataset, info, _ = onnx_dataset(reference, fp32, root=str(DATA), split="val")
    results = []
    ref_masks: list[np.ndarray] = []
    for name, engine in engines.items():
        miou, ious, masks = miou_of(engine, dataset, info)
        if name == "ort fp32":
            ref_masks = masks
        same = sum(int((m == r).sum()) for m, r in zip(masks, ref_masks, strict=True))
        total = sum(r.size for r in ref_masks)
        results.append(
            {
                "path": name,
                "served": f"{engine.backend_name} {engine.precision}",
                "median_ms": round(statistics.median(samples[name]), 1),
                "miou": round(miou, 2),
                "iou_per_class": dict(zip(info.classes, ious, strict=True)),
                "argmax_agreement": round(same / max(total, 1), 5),
            }
        )
        print(f"{name}: {results[-1]['median_ms']} ms, mIoU {miou:.2f}", file=sys.stderr)
    base_ms, base_miou = results[0]["median_ms"], results[0]["miou"]
    for r in results:
        r["speedup_vs_ort_fp32"] = round(base_ms / r["median_ms"], 2)
        r["miou_delta"] = round(r["miou"] - base_miou, 2)
    data = {
        "what": "the default model on this CPU: backend x precision, 512x512 ms (median of "
        "interleaved runs) and mIoU on the 16 Dubai validation images (full size, tiled as "
        "served) against ORT fp32",
        "command": " ".join(["bench/cpu_precision_bench.py", *sys.argv[1:]]),
        "cpu": cpu_info(),
        "cpu_class": cpu_class(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reps": args.reps,
        "threads": "engine default (all cores)",
        "auto": {
            "served": f"{auto.backend_name} {auto.precision}",
            "reason": auto.choice.reason if auto.choice else None,
            "checks_here": dict(auto.choice.checks) if auto.choice else {},
            "first_load_s": round(auto_load_s, 1),
        },
        "results": results,
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"CPU: {cpu_label(data['cpu'])}")
    print(f"{'path':28s} {'served':16s} {'ms':>7s} {'x fp32':>7s} {'mIoU':>6s} {'delta':>6s}")
    for r in results:
        print(
            f"{r['path']:28s} {r['served']:16s} {r['median_ms']:7.1f} "
            f"{r['speedup_vs_ort_fp32']:7.2f} {r['miou']:6.2f} {r['miou_delta']:+6.2f}"
        )
    print(f"auto: {data['auto']['served']} ({data['auto']['reason']})")
    print(f"wrote {shown(out)}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
