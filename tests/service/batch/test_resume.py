"""Atomic outputs and resume: a real ``fcn predict`` killed with SIGKILL, then restarted."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.cli import main
from service.batch.scan import BatchItem
from service.batch.writer import TEMP_SUFFIX, atomic_write, output_paths, temp_path

IMAGES = 120


def _jpeg(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def big_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
    data = _jpeg(384, 0)
    for i in range(IMAGES):
        (root / ("a" if i % 2 else "b") / f"img{i:03d}.jpg").write_bytes(data)
    return root


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_sigkill_half_way_then_skip_existing_finishes_cleanly(
    conv_model: Path, big_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "fcn", "predict", str(conv_model), str(big_folder)]
    argv += ["--out", str(out), "-f", "index,json", "--intra-op-threads", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.rglob("*_mask.png"))) < 10 and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    done = {p for p in out.rglob("*_mask.png")}
    assert 10 <= len(done) < IMAGES, "the kill must land half-way for this test to mean anything"
    before = {p: p.stat().st_mtime_ns for p in done}

    summary = tmp_path / "summary.csv"
    resumed = subprocess.run(
        [*argv, "--skip-existing", "--summary", str(summary)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    names = {p.relative_to(out).as_posix() for p in _outputs(out)}
    expected = {
        f"{'a' if i % 2 else 'b'}/img{i:03d}{suffix}"
        for i in range(IMAGES)
        for suffix in ("_mask.png", ".json")
    }
    assert names == expected  # every output present, no temporary file left
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))
    for path in out.rglob("*_mask.png"):
        with Image.open(path) as image:
            assert image.size == (384, 384)
            image.load()  # decodable to the last byte
    # Masks complete at the kill were left alone (a json may still have been missing).
    untouched = [p for p, mtime in before.items() if p.stat().st_mtime_ns == mtime]
    assert len(untouched) >= len(before) - 4  # at most the in-flight images were redone
    rows = summary.read_text().splitlines()[1:]
    skipped = sum(",skipped," in row for row in rows)
    assert len(rows) == IMAGES and skipped >= len(done) - 4
    assert f"{skipped} skipped" in resumed.stdout


def test_skip_existing_leaves_finished_outputs_alone(
    conv_model: Path, tmp_path: Path, capsys
) -> None:
    folder, out = tmp_path / "small", tmp_path / "out"
    folder.mkdir()
    for i in range(6):
        (folder / f"img{i:03d}.jpg").write_bytes(_jpeg(32, i))
    argv = ["predict", str(conv_model), str(folder), "--out", str(out)]
    assert main(argv) == 0
    mask = out / "img001_mask.png"
    mtime = mask.stat().st_mtime_ns
    (out / "img003_mask.png").unlink()
    assert main([*argv, "--skip-existing"]) == 0
    assert "1 ok, 0 failed, 5 skipped" in capsys.readouterr().out
    assert mask.stat().st_mtime_ns == mtime and (out / "img003_mask.png").is_file()
    assert main(argv) == 0  # without the flag everything is written again
    assert mask.stat().st_mtime_ns != mtime


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x" / "m_mask.png"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first" and not temp_path(target).exists()

    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"first" and not temp_path(target).exists()
    paths = output_paths(
        BatchItem(Path("in/cat.jpg"), Path("sub/cat")), tmp_path, ["index", "json"]
    )
    assert paths == {
        "index": tmp_path / "sub" / "cat_mask.png",
        "json": tmp_path / "sub" / "cat.json",
    }
