"""Claim: ``fcn train --max-minutes M`` ends within max(5% of M, 15 s) of M on this CPU, with
the final model scored exactly, and says what it did (issue 19's 3-minute dubai run).

Each row runs ``fcn train`` with its defaults in a fresh process and times the process from
start to exit (imports, data loading and the final evaluation included), next to what the run
itself reports on its ``done:`` line (steps, images/s, validations and their share). Rows:

* ``dubai-3min``: ``--data dubai_aerial --num-classes 6 --ignore-index 255 --max-minutes 3``,
  the run that took 327 s on an AVX2 machine before issue 19;
* ``isbi-fcn8s``: ``--arch fcn8s --max-minutes 2`` on ISBI with default options (the FCN-VGG
  models train in float32 everywhere; this measures their training speed).

Usage::

    .venv/bin/python bench/budget_bench.py [--rows dubai-3min,isbi-fcn8s] [--lock FILE]

Prints a table and writes bench/results/budget_bench.json.
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

from _cpu import cpu_info, cpu_label
from _paths import SHARED_DATA, shown

ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA
RESULTS = Path(__file__).parent / "results" / "budget_bench.json"
ROWS = {
    "dubai-3min": (
        3.0,
        ["--data", str(SHARED / "dubai_aerial"), "--num-classes", "6", "--ignore-index", "255"],
    ),
    "isbi-fcn8s": (
        2.0,
        ["--data", str(SHARED / "isbi2012_em_membrane"), "--mask-values", "0,255"]
        + ["--arch", "fcn8s"],
    ),
}
DONE = re.compile(
    r"done: (?P<epochs>\d+) epochs, (?P<steps>\d+) steps in (?P<minutes>[\d.]+) min, "
    r"(?P<ips>[\d.]+) images/s \(training\), (?P<validations>\d+) validations in "
    r"(?P<val_s>[\d.]+) s \((?P<val_pct>[\d.]+)% of the time\), best mIoU (?P<miou>[\d.]+)"
)


def run(name: str, work: Path, lock: Path | None) -> dict:
    minutes, args = ROWS[name]
    command = [sys.executable, "-m", "fcn", "train", *args, "--max-minutes", f"{minutes:g}"]
    command += ["--out", str(work / name), "--no-plots"]
    if lock is not None:
        command = ["flock", str(lock), *command]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{output[-3000:]}")
    match = DONE.search(output)
    if match is None:
        raise SystemExit(f"{name}: no 'done:' line in the output:\n{output[-3000:]}")
    budget = minutes * 60
    allowed = max(0.05 * budget, 15.0)
    too_short = [line for line in output.splitlines() if "too short to learn" in line]
    return {
        "row": name,
        "budget_s": budget,
        "wall_s": round(wall, 1),
        "over_s": round(wall - budget, 1),
        "allowed_over_s": allowed,
        "within": abs(wall - budget) <= allowed,
        "run_minutes": float(match["minutes"]),
        "epochs": int(match["epochs"]),
        "steps": int(match["steps"]),
        "images_per_s": float(match["ips"]),
        "validations": int(match["validations"]),
        "val_seconds": float(match["val_s"]),
        "val_share": float(match["val_pct"]) / 100,
        "best_miou": float(match["miou"]),
        "advice": too_short[-1].split("WARNING")[-1].strip() if too_short else None,
        "command": " ".join(
            shown(a) if os.path.isabs(a) else a for a in command[command.index("-m") - 1 :]
        ),
    }


def table(rows: list[dict], cpu: str) -> str:
    head = "| run | budget | wall (process) | over | within max(5%, 15 s) | steps | train img/s | validations | val share | best mIoU |"
    lines = [f"CPU: {cpu}", "", head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['budget_s']:.0f} s | {r['wall_s']:.0f} s | {r['over_s']:+.0f} s "
            f"| {'yes' if r['within'] else 'NO'} | {r['steps']} | {r['images_per_s']:.2f} "
            f"| {r['validations']} | {100 * r['val_share']:.0f}% | {r['best_miou']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--lock", type=Path, help="flock this file around each run")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as work:
        for name in args.rows.split(","):
            rows.append(run(name, Path(work), args.lock))
            print(table(rows, cpu_label()), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"cpu": cpu_info(), "command": " ".join(sys.argv), "results": rows}
    args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
