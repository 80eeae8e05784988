"""Small ONNX models for the service tests, built with onnx.helper (no torch, no downloads).

``make_onnx_model(path, kind=...)`` writes a model that follows docs/contracts.md: input
``image`` (N, C, H, W), output ``logits`` (N, K, H, W), dynamic N/H/W, JSON metadata.

Kinds:
    identity: logits = image (K = C), so the mask is the argmax over the input channels.
    conv: three 3x3 convolutions with dilations 1, 2, 4 (a 15-pixel receptive field, zero
        padded, like a real FCN), a 1x1 classifier, plus a 1x1 path from the pixels; fixed
        random weights.
    strided: a stride-4 convolution and a stride-4 transposed convolution: the graph only
        returns input-sized logits when H and W are multiples of 4 (size_multiple 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.metadata import ModelMetadata, encode_props

OPSET = 17


def default_metadata(in_channels: int, num_classes: int, size_multiple: int) -> dict[str, Any]:
    """Metadata values (not yet JSON-encoded) for a test model: ``ModelMetadata.to_dict()``."""
    rng = np.random.default_rng(num_classes)
    return ModelMetadata(
        arch="test",
        classes=tuple(f"class{i}" for i in range(num_classes)),
        palette=tuple(tuple(c) for c in rng.integers(0, 256, size=(num_classes, 3)).tolist()),
        in_channels=in_channels,
        mean=(0.0,) * in_channels,
        std=(1.0,) * in_channels,
        size_multiple=size_multiple,
        ignore_index=255,
        num_classes=num_classes,
    ).to_dict()


def _conv(name: str, x: str, w: np.ndarray, inits: list, **attrs: Any) -> Any:
    from onnx import helper, numpy_helper

    inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
    inits.append(numpy_helper.from_array(np.zeros(w.shape[0], np.float32), f"{name}_b"))
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], **attrs)


def _graph_nodes(kind: str, c: int, k: int) -> tuple[list, list]:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits: list = []
    if kind == "identity":
        if c != k:
            raise ValueError("identity needs in_channels == num_classes")
        return [helper.make_node("Identity", ["image"], ["logits"])], inits
    if kind == "conv":
        nodes, x, width = [], "image", 8
        for i, dilation in enumerate((1, 2, 4)):
            fan_in = (c if i == 0 else width) * 9
            w = rng.normal(0, np.sqrt(2 / fan_in), size=(width, c if i == 0 else width, 3, 3))
            pads = [dilation] * 4
            nodes.append(
                _conv(
                    f"c{i}", x, w, inits, kernel_shape=[3, 3], pads=pads, dilations=[dilation] * 2
                )
            )
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            x = f"r{i}"
        head = rng.normal(0, np.sqrt(2 / width), size=(k, width, 1, 1))
        nodes.append(_conv("context", x, head, inits, kernel_shape=[1, 1]))
        # A strong per-pixel path keeps the classes balanced on colourful inputs, so tests
        # comparing masks compare something with structure, not one dominant class.
        skip = rng.normal(0, 4.0, size=(k, c, 1, 1))
        nodes.append(_conv("skip", "image", skip, inits, kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Add", ["context", "skip"], ["logits"]))
        return nodes, inits
    if kind == "strided":
        down = rng.normal(0, 0.3, size=(8, c, 4, 4))
        nodes = [_conv("down", "image", down, inits, kernel_shape=[4, 4], strides=[4, 4])]
        nodes.append(helper.make_node("Relu", ["down"], ["down_r"]))
        up = rng.normal(0, 0.3, size=(8, k, 4, 4)).astype(np.float32)
        inits.append(numpy_helper.from_array(up, "up_w"))
        nodes.append(
            helper.make_node(
                "ConvTranspose", ["down_r", "up_w"], ["logits"], kernel_shape=[4, 4], strides=[4, 4]
            )
        )
        return nodes, inits
    raise ValueError(f"unknown test model kind {kind!r}")


def make_onnx_model(
    path: str | Path,
    *,
    kind: str = "conv",
    in_channels: int = 3,
    num_classes: int = 4,
    size_multiple: int = 1,
    metadata: dict[str, Any] | None = None,
    drop_keys: tuple[str, ...] = (),
    raw_metadata: dict[str, str] | None = None,
) -> Path:
    """Write a small ONNX segmentation model and return its path.

    Args:
        path: where to write the ``.onnx`` file.
        kind: ``identity``, ``conv`` or ``strided`` (see the module docstring).
        in_channels, num_classes, size_multiple: the graph's shape and its metadata.
        metadata: values replacing the defaults (JSON-encoded on write).
        drop_keys: metadata keys to leave out.
        raw_metadata: already-encoded strings written as they are (for invalid-JSON tests).
    """
    # onnx comes with the train/dev extras; serve-only installs skip model-based tests.
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes, inits = _graph_nodes(kind, in_channels, num_classes)
    graph = helper.make_graph(
        nodes,
        f"test_{kind}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", in_channels, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes, "H", "W"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # old enough for any onnxruntime the serve extra allows
    values = default_metadata(in_channels, num_classes, size_multiple)
    values.update(metadata or {})
    props = encode_props({key: value for key, value in values.items() if key not in drop_keys})
    props.update(raw_metadata or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def metadata_values():
    """``metadata_values(in_channels, num_classes, size_multiple)``: a valid metadata dict."""
    return default_metadata


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="session")
def conv_model(model_dir: Path) -> Path:
    return make_onnx_model(model_dir / "conv.onnx", kind="conv", num_classes=4)


@pytest.fixture(scope="session")
def strided_model(model_dir: Path) -> Path:
    return make_onnx_model(
        model_dir / "strided.onnx", kind="strided", num_classes=3, size_multiple=4
    )


@pytest.fixture(scope="session")
def identity_model(model_dir: Path) -> Path:
    return make_onnx_model(model_dir / "identity.onnx", kind="identity", num_classes=3)


@pytest.fixture(scope="session")
def make_model(model_dir: Path):
    """``make_model(name, **kwargs)``: a model file in the session's model folder."""

    def build(name: str, **kwargs: Any) -> Path:
        return make_onnx_model(model_dir / f"{name}.onnx", **kwargs)

    return build
