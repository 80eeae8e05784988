"""End-to-end fixtures: ONNX test models with predictable masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import make_onnx_model

# identity model: logits = pixels, so the mask is the argmax over R, G, B.
IDENTITY_CLASSES = ["red", "green", "blue"]
IDENTITY_PALETTE = [[230, 25, 75], [60, 180, 75], [0, 130, 200]]


@pytest.fixture(scope="session")
def rgb_identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class model whose mask is the brightest channel: red 0, green 1, blue 2."""
    return make_onnx_model(
        tmp_path_factory.mktemp("e2e_models") / "rgb.onnx",
        kind="identity",
        num_classes=3,
        metadata={"classes": IDENTITY_CLASSES, "palette": IDENTITY_PALETTE},
    )


@pytest.fixture(scope="session")
def conv_4class_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model for the selector (4 classes, fixed random weights)."""
    return make_onnx_model(tmp_path_factory.mktemp("e2e_models") / "conv.onnx", kind="conv")
