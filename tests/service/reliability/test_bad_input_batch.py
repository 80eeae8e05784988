"""The bad-input corpus through the batch CLI (a real ``fcn predict`` subprocess).

Every file ends as one summary row: ``ok`` with a mask of its size, or ``failed`` with the
reason; the batch goes on past every bad file, each file takes under 2 s, exit status 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.service.reliability.corpus import encode, file_cases, random_image

REPO = Path(__file__).resolve().parents[3]


def fcn_predict(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "fcn.cli", "predict", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_every_corpus_file_is_segmented_or_reported(conv_model, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    by_path = {}
    for case in file_cases():
        path = inputs / f"{case.name}-{case.filename}"
        path.write_bytes(case.data)
        by_path[str(path)] = case
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    done = fcn_predict(str(conv_model), *by_path, "--out", str(out), "--summary", str(summary))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = json.loads(summary.read_text())
    assert sorted(row["path"] for row in rows) == sorted(by_path)
    for row in rows:
        case = by_path[row["path"]]
        assert row["milliseconds"] < 2000, row
        if case.batch_reason is None and case.status == 200:
            assert row["status"] == "ok", row
            assert (row["width"], row["height"]) == case.size
            mask = out / f"{Path(row['path']).stem}_mask.png"
            with Image.open(mask) as image:
                assert image.size == case.size
        else:
            assert row["status"] == "failed", row
            assert case.batch_reason.lower() in row["error"].lower(), row
            assert f"FAILED {row['path']}: " in done.stderr
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left"


def _peak_rss_mb(model: Path, image: Path, out: Path) -> float:
    """Peak RSS of one ``fcn predict`` run, through a wrapper that reports its child's."""
    code = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            sys.executable,
            "-m",
            "fcn.cli",
            "predict",
            str(model),
            str(image),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def test_a_forged_huge_header_costs_the_batch_no_memory(conv_model, tmp_path: Path) -> None:
    huge = next(c for c in file_cases() if c.name == "header-60000x60000")
    small, forged = tmp_path / "small.png", tmp_path / "forged.png"
    small.write_bytes(encode(random_image(40, 30), "PNG"))
    forged.write_bytes(huge.data)
    baseline = _peak_rss_mb(conv_model, small, tmp_path / "a")
    peak = _peak_rss_mb(conv_model, forged, tmp_path / "b")
    assert peak - baseline < 50, (baseline, peak)
