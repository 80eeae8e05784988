"""Fixtures for the training tests: tiny folder datasets, a fake VOC tree, the demo set, the
real ISBI data, one tiny training run per session, and single-threaded torch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.requirements import shared_data
from training.data.demo import write_demo
from training.data.layouts import VOC_CLASSES, class_palette


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write ``array`` (uint8/uint16, HxW or HxWxC) to ``path``; the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture
def make_folder_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make(n=6, size=(24, 32), channels=3, values=(0, 255), root=None)``.

    Writes ``root/images/iNN.png`` (random pixels) and ``root/masks/iNN.png`` whose pixels
    cycle through ``values``; returns ``root``.
    """

    def make(
        n: int = 6,
        size: tuple[int, int] = (24, 32),
        channels: int = 3,
        values: tuple[int, ...] = (0, 255),
        root: Path | None = None,
    ) -> Path:
        root = root or tmp_path / "ds"
        rng = np.random.default_rng(0)
        shape = size if channels == 1 else (*size, channels)
        for i in range(n):
            save_image(
                root / "images" / f"i{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8)
            )
            mask = np.resize(np.array(values, dtype=np.uint8), size[0] * size[1]).reshape(size)
            save_image(root / "masks" / f"i{i:02d}.png", mask)
        return root

    return make


@pytest.fixture
def fake_voc(tmp_path: Path) -> Path:
    """A 5-image ``VOCdevkit/VOC2012`` tree: JPEGs, palette masks with 255 borders, splits."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    palette = [c for colour in class_palette(256) for c in colour]
    rng = np.random.default_rng(1)
    ids = [f"2007_00000{i}" for i in range(5)]
    for i, name in enumerate(ids):
        save_image(
            voc / "JPEGImages" / f"{name}.jpg", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        )
        mask = np.zeros((20, 30), dtype=np.uint8)
        mask[5:15, 5:20] = 255  # the object's "void" border...
        mask[6:14, 6:19] = [15, 12, 1, 20, 7][i]  # ...around a class
        indexed = Image.fromarray(mask)
        indexed.putpalette(palette)
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        indexed.save(voc / "SegmentationClass" / f"{name}.png")
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[3:]) + "\n")
    assert len(VOC_CLASSES) == 21
    return tmp_path / "VOCdevkit"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated demo dataset: 12 images of 64x64, seed 0 (shared, do not modify)."""
    return write_demo(tmp_path_factory.mktemp("demo"), count=12, size=64, seed=0)


@pytest.fixture
def isbi_root() -> Path:
    """The real ISBI 2012 EM data (30 slices, masks 0/255); skips (fails under
    FCN_REQUIRE_ALL) when it is not there."""
    return shared_data("isbi2012_em_membrane", "images").parent


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, array, mode=None)``: save an array as an image file."""
    return save_image


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Torch on one thread (``pytestmark = pytest.mark.usefixtures("single_thread")``).

    On a shared 2-core machine two OpenMP threads competing with another process spin and
    run 5-20x slower, while these tiny models gain nothing from a second thread.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[Path, Any]:
    """``tiny_config`` trained once per test session: ``(run folder, TrainResult)``."""
    import torch

    from tests.training.tiny_runs import tiny_config
    from training.loop.train import train

    out = tmp_path_factory.mktemp("tiny-run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session-scoped: runs before a test's ``single_thread``
    try:
        return out, train(tiny_config(demo_root, out))
    finally:
        torch.set_num_threads(threads)
