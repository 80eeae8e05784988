"""The generated demo dataset and ``fcn data``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from fcn.cli import main
from training.config import DataConfig
from training.data.datasets import build_datasets
from training.data.demo import CLASSES, PALETTE, render_sample, write_demo


def test_render_is_deterministic_and_seeded() -> None:
    image, mask = render_sample(3, size=64, seed=5)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and mask.shape == (64, 64)
    again = render_sample(3, size=64, seed=5)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1])
    assert not np.array_equal(image, render_sample(3, size=64, seed=6)[0])


def test_every_class_appears() -> None:
    seen = set()
    for index in range(16):
        seen |= set(np.unique(render_sample(index, size=64)[1]).tolist())
    assert seen == set(range(len(CLASSES)))


def test_same_seed_gives_byte_identical_files(tmp_path) -> None:
    first = write_demo(tmp_path / "a", count=3, size=32, seed=2)
    second = write_demo(tmp_path / "b", count=3, size=32, seed=2)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 7  # 3 images, 3 masks, dataset.json
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_demo_layout_and_dataset_json(demo_root) -> None:
    meta = json.loads((demo_root / "dataset.json").read_text())
    assert meta == {"classes": list(CLASSES), "palette": [list(c) for c in PALETTE]}
    mask = Image.open(demo_root / "masks" / "0000.png")
    assert mask.mode == "P" and np.asarray(mask).max() < len(CLASSES)  # indices, not colours
    _, _, info = build_datasets(DataConfig(root=str(demo_root)))
    assert info.classes == list(CLASSES) and info.in_channels == 3


def test_cli_writes_demo_and_refuses_a_full_folder(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["data", "demo", "--out", str(out), "--count", "2", "--size", "32"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0000.png", "0001.png"]
    assert main(["data", "demo", "--out", str(out), "--count", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_check_summarises(demo_root, capsys) -> None:
    assert main(["data", "check", "--data", str(demo_root)]) == 0
    output = capsys.readouterr().out
    assert "12 pairs" in output and "star" in output


def test_command_module_imports_no_torch() -> None:
    code = "import sys, training.cli, training.commands.data; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_opencv_the_same_images_within_one_grey_level(monkeypatch) -> None:
    """The serve-only install (no OpenCV) renders the same scenes: `make run`'s sample image."""
    from training.data import demo

    with_cv2 = [render_sample(i, size=s) for i, s in ((0, 256), (5, 97))]
    monkeypatch.setattr(demo, "cv2", None)
    for (image, mask), (i, s) in zip(with_cv2, ((0, 256), (5, 97)), strict=True):
        plain, plain_mask = render_sample(i, size=s)
        assert np.array_equal(mask, plain_mask)
        diff = np.abs(image.astype(int) - plain.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999
