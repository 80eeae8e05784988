"""Export-time precision checks: measured against ORT fp32, recorded, and read by auto."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fcn
from fcn.cli import main
from service.backends import cpu_has_bf16, openvino_available
from service.backends.reference import REFERENCE_KEY, ReferenceSet
from service.backends.select import verified
from service.engine import Engine, EngineConfig
from training.export.onnx import export_model, read_metadata
from training.export.quantize import calibration_images, quantize_int8
from training.export.verify import check_precisions, record_checks

CONFIG = {
    "model": {
        "arch": "unet",
        "num_classes": 5,
        "in_channels": 3,
        "options": {"encoder": "resnet18"},
    },
    "data": {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "ignore_index": 255,
        "classes": ["background", "ellipse", "rectangle", "triangle", "star"],
    },
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = fcn.build_model("unet", num_classes=5, in_channels=3, encoder="resnet18").eval()
    out = tmp_path_factory.mktemp("verify") / "model.onnx"
    fp32 = export_model(model, CONFIG, out, exporter="legacy", parity_sizes=((19, 45),)).path
    images = calibration_images(demo_root, limit=4)
    int8 = quantize_int8(fp32, out.with_name("model.int8.onnx"), images, check_images=1).path
    return fp32, int8


def test_checks_measure_every_available_path_and_auto_reads_them(
    models: tuple[Path, Path], demo_root: Path
) -> None:
    fp32, int8 = models
    checks = check_precisions(fp32, int8, root=str(demo_root))
    expected = {"ort/int8"}
    if openvino_available():
        expected |= {"openvino/int8"} | ({"openvino/bf16"} if cpu_has_bf16() else set())
    assert set(checks["results"]) == expected
    assert checks["images"] >= 1 and checks["int8_file"] == "model.int8.onnx"
    for result in checks["results"].values():
        assert 0.0 < result["argmax_agreement"] <= 1.0
        ref = checks["reference"]["miou"]
        assert result["miou_delta"] == pytest.approx(result["miou"] - ref, abs=1e-3)

    record_checks(checks, fp32, int8)
    # the reference crops go under their own key, in both files; the rest is precision_checks
    recorded = dict(checks)
    reference_set = recorded.pop(REFERENCE_KEY)
    assert read_metadata(fp32).precision_checks == recorded
    for path in (fp32, int8):
        assert read_metadata(path).extra[REFERENCE_KEY] == reference_set
    refset = ReferenceSet.from_value(reference_set)
    assert refset is not None and set(refset.recorded) == set(checks["results"])
    assert read_metadata(int8).extra["quantization"]["format"] == "QDQ"  # other keys kept
    engine = Engine.load(fp32, EngineConfig(backend="ort"))
    assert engine.precision == ("int8" if verified(checks, "ort", "int8") else "fp32")
    assert engine.metadata.num_classes == 5


def test_export_cli_records_checks_in_the_files_it_wrote(
    models: tuple[Path, Path], demo_root: Path, tmp_path: Path, capsys
) -> None:
    fp32, _ = models
    before = read_metadata(fp32)
    out = tmp_path / "q.onnx"
    args = [
        "export",
        "--onnx",
        str(fp32),
        "--quantize",
        "int8",
        "--calibration-data",
        str(demo_root),
        "--int8-out",
        str(out),
        "--calibration-limit",
        "2",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "precision checks on" in printed and "ort/int8: mIoU" in printed
    assert read_metadata(out).precision_checks["int8_file"] == "q.onnx"
    assert read_metadata(fp32) == before  # an --onnx input is not rewritten
