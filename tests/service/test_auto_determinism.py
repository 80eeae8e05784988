"""One choice per CPU and model: two fresh ``fcn predict`` processes serve the same path.

Each process runs ``--precision auto`` on the bundled default model (its reference check and
its timing); they share the decision cache (``--decision-cache``, as replicas sharing a volume
do), so the second reads the first's decision, and the masks of 10 different images are
byte-identical.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "service" / "http" / "web" / "samples" / "dubai-aerial.jpg"


def _images(folder: Path, count: int = 10) -> list[Path]:
    """``count`` different crops of the packaged aerial sample, as PNG."""
    folder.mkdir()
    with Image.open(SAMPLE) as image:
        pixels = np.asarray(image.convert("RGB"))
    h, w = pixels.shape[:2]
    side = min(h, w) // 2
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        path = folder / f"crop{i:02d}.png"
        Image.fromarray(pixels[top : top + side, left : left + side]).save(path)
        paths.append(path)
    return paths


def _predict(inputs: Path, out: Path, cache: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(out.parent)}
    command = [sys.executable, "-m", "fcn", "predict", "default", str(inputs), "--out", str(out)]
    result = subprocess.run(
        [*command, "--decision-cache", str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [
        x for x in result.stderr.splitlines() if x.startswith("fcn predict: ") and ": auto" in x
    ]
    return line


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_two_processes_pick_one_path_and_return_identical_masks(tmp_path: Path) -> None:
    inputs = tmp_path / "images"
    images = _images(inputs)
    cache = tmp_path / "shared" / "decisions.json"
    first = _predict(inputs, tmp_path / "a", cache)
    second = _predict(inputs, tmp_path / "b", cache)
    assert first.split(":")[1] == second.split(":")[1]  # "ort int8", "openvino int8", ...
    assert "checked here" in first  # the bundled default carries its reference crops
    for image in images:
        a = (tmp_path / "a" / f"{image.stem}_mask.png").read_bytes()
        b = (tmp_path / "b" / f"{image.stem}_mask.png").read_bytes()
        assert a == b, image.name
    masks = {(tmp_path / "a" / f"{p.stem}_mask.png").read_bytes() for p in images}
    assert len(masks) == len(images)  # ten different images, ten different masks
