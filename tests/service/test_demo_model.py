"""The bundled demo model (``service/assets/demo.onnx``, served as ``demo``): small, loadable,
really trained on the shapes of ``fcn data demo``.

Scored through the serving engine (ONNX Runtime) on demo images rendered with a seed the model
never saw (training used seed 0; see ``make demo-model``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine import Engine
from service.models import (
    DEFAULT_MODEL_NAME,
    DEMO_MODEL_NAME,
    bundled_model_path,
    model_sources,
)

MAX_BYTES = 10 * 1024 * 1024
MIN_MIOU = 0.9
HELD_OUT_SEED = 12345  # training data is seed 0
ASSET = Path(__file__).resolve().parents[2] / "service" / "assets" / "demo.onnx"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(ASSET)


def test_bundled_file_is_small_and_found_by_the_model_resolver() -> None:
    assert ASSET.is_file(), "service/assets/demo.onnx is missing: run `make demo-model`"
    assert ASSET.stat().st_size <= MAX_BYTES
    assert bundled_model_path(DEMO_MODEL_NAME).resolve() == ASSET
    # With nothing named, both bundled models are served: the aerial default first.
    assert [s.name for s in model_sources()] == [DEFAULT_MODEL_NAME, DEMO_MODEL_NAME]
    assert model_sources()[1].path.resolve() == ASSET
    assert model_sources(["demo"])[0].path.resolve() == ASSET


def test_metadata_describes_the_demo_classes(engine: Engine) -> None:
    pytest.importorskip("cv2", reason="training.data.demo needs OpenCV")
    from training.data.demo import CLASSES, PALETTE

    meta = engine.metadata
    assert meta.classes == CLASSES
    assert meta.palette == PALETTE
    assert meta.in_channels == 3


def test_scores_miou_above_0_9_on_unseen_demo_images(engine: Engine) -> None:
    pytest.importorskip("cv2", reason="training.data.demo needs OpenCV")
    from training.data.demo import CLASSES, render_sample

    k = len(CLASSES)
    confusion = np.zeros((k, k), np.int64)
    for index in range(32):
        image, mask = render_sample(index, size=240, seed=HELD_OUT_SEED)
        predicted = engine.predict(image)
        assert predicted.shape == mask.shape
        pairs = mask.astype(np.int64) * k + predicted
        confusion += np.bincount(pairs.ravel(), minlength=k * k).reshape(k, k)
    hits = np.diag(confusion)
    iou = hits / (confusion.sum(0) + confusion.sum(1) - hits)
    per_class = dict(zip(CLASSES, iou.round(4).tolist(), strict=True))
    assert iou.mean() >= MIN_MIOU, f"mIoU {iou.mean():.4f} < {MIN_MIOU}: {per_class}"
