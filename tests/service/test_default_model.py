"""The bundled default model (``service/assets/default.onnx``): aerial land cover, scored the
way it is served.

Scored through the serving engine (ONNX Runtime or OpenVINO at the precision ``auto`` picks,
full-size images, tiling as served, every labelled pixel) on the 16 validation images of the
Dubai aerial set in ``../shared`` (skipped when that folder is absent, failed under
FCN_REQUIRE_ALL), and on the aerial
sample the web page ships (a validation crop, so never trained on).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine import Engine
from service.models import DEFAULT_MODEL_NAME, bundled_model_path, model_sources
from service.pipeline import segment
from tests.requirements import required, shared_data, shared_data_root

ROOT = Path(__file__).resolve().parents[2]
ASSET = ROOT / "service" / "assets" / "default.onnx"
MAX_BYTES = 15 * 1000 * 1000
CLASSES = ["building", "land", "road", "vegetation", "water", "unlabeled"]
IGNORE = 255
SAMPLE_MASK = Path(__file__).parent / "data" / "dubai-aerial_mask.png"

# What the bundle scores, asserted as measured (docs/default-model.md). The first bundle (8-bit
# weights) set these floors: its scores floored to two decimals less 0.01 for other CPUs' INT8
# kernels. The bundle re-quantized with 7-bit weights (so AVX2 CPUs without VNNI do not
# saturate) still meets every one on an AVX2-only Zen 3 (mIoU 0.556 / 0.557 on ONNX Runtime /
# OpenVINO; the lowest margin is vegetation's, 0.565). The per-class target (every class but
# `unlabeled` >= 0.45) is met; the mIoU target (0.62 over the six classes) is not: `unlabeled`
# is never predicted, see the docs. Raise these with a better model.
MIN_MIOU = 0.55
MIN_CLASS_IOU = {"building": 0.64, "land": 0.76, "road": 0.51, "vegetation": 0.56, "water": 0.82}
TARGET_CLASS_IOU = 0.45  # the floor for every class but `unlabeled`
MIN_SAMPLE_ACCURACY = 0.77  # measured 0.788 (ONNX Runtime and OpenVINO INT8)


def dubai_root() -> Path | None:
    """The Dubai aerial set in the shared data folder, or None when it is not there."""
    root = shared_data_root() / "dubai_aerial"
    return root if (root / "val" / "images").is_dir() else None


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(ASSET)


def confusion(engine: Engine, pairs: list[tuple[Path, Path]], k: int) -> np.ndarray:
    matrix = np.zeros((k, k), np.int64)
    for image, mask_path in pairs:
        predicted = segment(engine, image).mask  # decoded as `fcn serve` decodes an upload
        mask = np.asarray(Image.open(mask_path))
        assert predicted.shape == mask.shape
        keep = mask != IGNORE
        pairs_ = mask[keep].astype(np.int64) * k + predicted[keep]
        matrix += np.bincount(pairs_, minlength=k * k).reshape(k, k)
    return matrix


def iou_per_class(matrix: np.ndarray) -> dict[str, float]:
    hits = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - hits
    return {name: float(h / u) for name, h, u in zip(CLASSES, hits, union, strict=True) if u}


def test_bundled_file_is_at_most_15_mb_and_is_the_default() -> None:
    assert ASSET.is_file(), "service/assets/default.onnx is missing: run `make default-model`"
    assert ASSET.stat().st_size <= MAX_BYTES
    assert bundled_model_path().resolve() == ASSET
    assert model_sources()[0].name == DEFAULT_MODEL_NAME
    assert model_sources()[0].path.resolve() == ASSET


def test_metadata_has_the_datasets_classes_palette_source_and_recipe(engine: Engine) -> None:
    meta = engine.metadata
    assert list(meta.classes) == CLASSES and meta.in_channels == 3
    root = dubai_root()
    if root is None and required():
        pytest.fail("the Dubai aerial set is not here (../shared/data/dubai_aerial)")
    if root is not None:
        described = json.loads((root / "dataset.json").read_text())
        assert list(meta.classes) == described["classes"]
        assert [list(colour) for colour in meta.palette] == described["palette"]
    assert "Dubai" in meta.extra["source"] and "CC0" in meta.extra["source"]
    assert meta.extra["recipe"].startswith("make default-model: fcn train")
    # the precision auto serves was checked against fp32 on the validation images
    checks = meta.precision_checks
    assert checks["images"] == 16 and checks["split"] == "val"
    # the file is the INT8 copy, bundled because no recorded INT8 path lost more than 0.5 point
    int8 = {path: r for path, r in checks["results"].items() if path.endswith("/int8")}
    assert int8 and all(r["miou_delta"] >= -0.5 for r in int8.values()), int8


def test_segments_the_packaged_sample_like_its_ground_truth(engine: Engine) -> None:
    sample = resources.files("service") / "http" / "web" / "samples" / "dubai-aerial.jpg"
    truth = np.asarray(Image.open(SAMPLE_MASK))
    predicted = segment(engine, sample.read_bytes()).mask  # the served decode -> predict
    assert predicted.shape == truth.shape == (512, 512)
    accuracy = float((predicted == truth).mean())
    assert accuracy >= MIN_SAMPLE_ACCURACY, accuracy
    # all five land-cover classes of the crop are found
    assert set(np.unique(predicted).tolist()) >= {0, 1, 2, 3, 4}


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_scores_on_the_16_validation_images_at_full_size() -> None:
    root = shared_data("dubai_aerial", "val", "images").parents[1]
    engine = Engine.load(ASSET)  # precision auto: what `fcn serve` serves
    names = sorted(p.stem for p in (root / "val" / "images").glob("*.jpg"))
    assert len(names) == 16
    pairs = [
        (root / "val" / "images" / f"{n}.jpg", root / "val" / "masks" / f"{n}.png") for n in names
    ]
    ious = iou_per_class(confusion(engine, pairs, len(CLASSES)))
    miou = float(np.mean(list(ious.values())))
    report = f"mIoU {miou:.4f}, " + ", ".join(f"{k} {v:.4f}" for k, v in ious.items())
    assert miou >= MIN_MIOU, report
    for name, floor in MIN_CLASS_IOU.items():
        assert ious[name] >= max(floor, TARGET_CLASS_IOU), f"{name}: {report}"
