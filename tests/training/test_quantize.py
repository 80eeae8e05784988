"""Static INT8 quantization: QDQ graph, metadata kept, agreement with FP32, calibration data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import fcn
from fcn.cli import main
from service.engine import Engine
from training.config import DataConfig
from training.data.datasets import list_pairs
from training.export.onnx import export_model, read_metadata
from training.export.quantize import QuantizeError, calibration_images, head_nodes, quantize_int8

CONFIG = {
    "model": {
        "arch": "unet",
        "num_classes": 5,
        "in_channels": 3,
        "options": {"encoder": "resnet18"},
    },
    "data": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "ignore_index": 255},
}


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = fcn.build_model("unet", num_classes=5, in_channels=3, encoder="resnet18").eval()
    out = tmp_path_factory.mktemp("fp32") / "model.onnx"
    return export_model(model, CONFIG, out, exporter="legacy", parity_sizes=((19, 45),)).path


@pytest.fixture(scope="module")
def int8_model(fp32_model: Path, demo_root: Path):
    images = calibration_images(demo_root)
    return quantize_int8(fp32_model, fp32_model.with_name("model.int8.onnx"), images)


def test_int8_is_qdq_keeps_metadata_and_agrees_with_fp32(
    int8_model, fp32_model: Path, demo_root: Path
) -> None:
    proto = onnx.load(str(int8_model.path))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ, not QOperator
    # Per-channel weights: some DequantizeLinear has a vector of scales.
    inits = {t.name: t for t in proto.graph.initializer}
    scales = [
        inits[n.input[1]]
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[1] in inits
    ]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales)

    fp32_meta, int8_meta = read_metadata(fp32_model), read_metadata(int8_model.path)
    quantization = int8_meta.extra["quantization"]
    others = {k: v for k, v in int8_meta.extra.items() if k != "quantization"}
    assert dataclasses.replace(int8_meta, extra=others) == fp32_meta
    assert quantization["format"] == "QDQ"
    assert quantization["fp32_agreement"] == pytest.approx(int8_model.agreement)

    # Served predictions agree with FP32 on most pixels, also on images it was not tuned on.
    fp32, int8 = Engine.load(fp32_model), Engine.load(int8_model.path)
    val = list_pairs(DataConfig(root=str(demo_root)), "val")
    agree = [
        np.mean(fp32.predict(fp32.decode(p.image)) == int8.predict(int8.decode(p.image)))
        for p in val
    ]
    assert np.mean(agree) > 0.9


def test_calibration_uses_the_training_split_only(demo_root: Path) -> None:
    cfg = DataConfig(root=str(demo_root))
    train = {p.image for p in list_pairs(cfg, "train")}
    val = {p.image for p in list_pairs(cfg, "val")}
    chosen = set(calibration_images(demo_root))
    assert chosen == train and not chosen & val
    assert len(calibration_images(demo_root, limit=3)) == 3
    # A plain folder of images: all of them.
    assert len(calibration_images(demo_root / "images")) == len(train) + len(val)


def test_bad_calibration_data(tmp_path: Path, fp32_model: Path) -> None:
    with pytest.raises(QuantizeError, match="not a folder"):
        calibration_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(QuantizeError, match="no images"):
        calibration_images(tmp_path)
    with pytest.raises(QuantizeError, match="unknown calibration method"):
        quantize_int8(fp32_model, tmp_path / "q.onnx", [Path("x.png")], method="kl")


def test_head_nodes_finds_the_classifier(fp32_model: Path) -> None:
    proto = onnx.load(str(fp32_model), load_external_data=False)
    (head,) = head_nodes(proto)
    node = next(n for n in proto.graph.node if n.name == head)
    weight = next(t for t in proto.graph.initializer if t.name == node.input[1])
    assert node.op_type == "Conv" and weight.dims[0] == 5  # one filter per class


def quantize_args(model: Path, calibration: Path) -> list[str]:
    """``fcn export`` arguments quantizing ``model`` on the images in ``calibration``."""
    return [
        "export",
        "--onnx",
        str(model),
        "--quantize",
        "int8",
        "--calibration-data",
        str(calibration),
    ]


def test_cli_quantizes_an_exported_model(
    fp32_model: Path, demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "q.onnx"
    args = [*quantize_args(fp32_model, demo_root), "--int8-out", str(out)]
    args += "--calibration-limit 4 --calibration-method percentile --fp32-head".split()
    assert main(args) == 0
    assert "static INT8, QDQ, percentile calibration on 4 images" in capsys.readouterr().out
    quant = read_metadata(out).extra["quantization"]
    assert quant["method"] == "percentile" and quant["fp32_nodes"] == 1


def test_cli_empty_calibration_folder(fp32_model: Path, tmp_path: Path, capsys) -> None:
    args = quantize_args(fp32_model, tmp_path)
    assert main(args) == 2
    assert "no images in" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
