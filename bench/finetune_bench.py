"""Claim: fine-tuning the default model beats training from scratch in the same CPU minutes.

Issue 33's measurement. On the Dubai aerial set's train split, two runs of ``fcn train`` with
the same time budget, one after another in fresh processes (no two overlap; with ``--lock``
each holds the shared machine's lock while it runs):

* ``finetune``: ``--init default --lr 2e-4`` (the bundled default's fp32 source; its
  architecture, options and classes come from its metadata; the loop's fine-tuning rate, a
  tenth of training from scratch's);
* ``scratch``: the default's recipe from random weights (``--arch unet --encoder resnet18``).

Both end with ``last.pt`` (the weights at the end of the budget, not the best validation: the
validation images are the ones scored) and are scored by ``fcn evaluate --checkpoint`` on the 16
validation images at full size, float32. The default model itself (before fine-tuning) is
scored by ``fcn evaluate --model`` on its fp32 source as the starting point.

Usage::

    .venv/bin/python bench/finetune_bench.py [--minutes 5] [--lock /tmp/fcn-heavy.lock]

Prints a table and writes bench/results/finetune_bench.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "dubai_aerial"
SOURCE = ROOT / "models" / "default" / "default.fp16.onnx"
RESULTS = Path(__file__).parent / "results" / "finetune_bench.json"
DATA_ARGS = ["--num-classes", "6", "--ignore-index", "255", "--seed", "0"]
ROWS: dict[str, list[str]] = {
    # at the labelling loop's learning rate (service/loop/pipeline.py FINE_TUNE_LR)
    "finetune": ["--init", "default", "--lr", "2e-4"],
    "scratch": ["--arch", "unet", "--encoder", "resnet18"],
}
_DONE = re.compile(r"(\d+) epochs, (\d+) steps in ([\d.]+) min \(([\d.]+) training images/s\)")


def _run(command: list[str], lock: Path | None) -> str:
    if lock is not None:
        command = ["flock", str(lock), *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _evaluate(model_args: list[str], out: Path, lock: Path | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "fcn", "evaluate", *model_args, "--data", str(DATA)]
    command += [*DATA_ARGS, "--device", "cpu", "--json", str(out)]
    _run(command, lock)
    report = json.loads(out.read_text())
    keys = ("miou", "pixel_accuracy", "per_class_iou", "classes", "images")
    return {k: report.get(k) for k in keys}


def train_row(row: str, minutes: float, work: Path, lock: Path | None) -> dict[str, Any]:
    """One ``fcn train`` run of ``minutes`` and its ``last.pt`` scored on the validation split."""
    out = work / row
    train = [sys.executable, "-m", "fcn", "train", "--data", str(DATA), *DATA_ARGS, *ROWS[row]]
    train += ["--max-minutes", str(minutes), "--device", "cpu", "--no-plots", "--out", str(out)]
    start = time.perf_counter()
    stdout = _run(train, lock)
    wall = time.perf_counter() - start
    match = _DONE.search(stdout)
    scores = _evaluate(["--checkpoint", str(out / "last.pt")], work / f"{row}.json", lock)
    return {
        "row": row,
        "command": "fcn train " + " ".join(ROWS[row]) + f" --max-minutes {minutes:g}",
        "minutes": minutes,
        "wall_s": round(wall, 1),
        "epochs": int(match.group(1)) if match else None,
        "steps": int(match.group(2)) if match else None,
        "images_per_s": float(match.group(4)) if match else None,
        **scores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="each run's budget")
    parser.add_argument("--lock", type=Path, help="hold this flock file during each run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (DATA / "dataset.json").is_file() or not SOURCE.is_file():
        parser.error(f"needs {DATA} and {SOURCE}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        work = Path(tmp)
        start = _evaluate(["--model", str(SOURCE)], work / "default.json", args.lock)
        rows.append({"row": "default", "command": "the default model, no training", **start})
        for row in ROWS:
            rows.append(train_row(row, args.minutes, work, args.lock))
    result = {
        "claim": "fine-tuning the default beats training from scratch in the same minutes",
        "command": f"python bench/finetune_bench.py --minutes {args.minutes:g}",
        "date": time.strftime("%Y-%m-%d"),
        "data": "dubai_aerial: train split (56 images) trained on, val split (16) scored",
        "cpu": cpu_info(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'row':<10} {'steps':>6} {'val mIoU':>9} {'pixel acc':>10}")
    for r in rows:
        print(
            f"{r['row']:<10} {r.get('steps') or '':>6} {r['miou']:>9.4f} {r['pixel_accuracy']:>10.4f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
