"""``fcn export --bundle``: the one file shipped is what ``--precision auto`` would serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import make_onnx_model
from training.export.bundle import bundle, choose


def checks(**deltas: float) -> dict:
    """A ``precision_checks`` entry with these ``backend_precision=delta`` results (points)."""
    return {
        "reference": {"backend": "ort", "precision": "fp32", "miou": 60.0},
        "results": {
            key.replace("_", "/"): {"miou": 60.0 + d, "miou_delta": d, "argmax_agreement": 0.99}
            for key, d in deltas.items()
        },
        "int8_file": "model.int8.onnx",
        "images": 16,
        "split": "val",
    }


def export_pair(tmp_path: Path, recorded: dict | None, *, with_int8: bool = True) -> Path:
    extra = {"precision_checks": recorded} if recorded is not None else {}
    fp32 = make_onnx_model(tmp_path / "model.onnx", metadata=extra)
    if with_int8:
        make_onnx_model(
            tmp_path / "model.int8.onnx", metadata={**extra, "quantization": {"method": "minmax"}}
        )
    return fp32


def test_int8_is_bundled_when_every_recorded_int8_check_is_within_half_a_point(tmp_path):
    fp32 = export_pair(tmp_path, checks(ort_int8=-0.31, openvino_int8=-0.5))
    chosen, reason = choose(fp32)
    assert chosen == tmp_path / "model.int8.onnx"
    assert reason.startswith("int8") and "ort/int8 -0.31" in reason


@pytest.mark.parametrize(
    ("recorded", "with_int8", "why"),
    [
        (checks(ort_int8=-0.51), True, "ort/int8 -0.51"),
        (checks(ort_int8=-0.2, openvino_int8=-1.4), True, "openvino/int8 -1.40"),
        (checks(openvino_int8=-0.1), True, "no checked INT8 copy"),  # ORT path never measured
        (checks(ort_int8=-0.1), False, "no checked INT8 copy"),  # the file is gone
        (None, True, "no checked INT8 copy"),  # exported with --no-verify
    ],
)
def test_fp32_is_bundled_otherwise(tmp_path, recorded, with_int8, why):
    fp32 = export_pair(tmp_path, recorded, with_int8=with_int8)
    chosen, reason = choose(fp32)
    assert chosen == fp32
    assert reason.startswith("fp32") and why in reason


def test_bundle_copies_the_choice_and_refuses_a_file_over_the_limit(tmp_path):
    fp32 = export_pair(tmp_path, checks(ort_int8=-0.1))
    dest = tmp_path / "assets" / "default.onnx"
    chosen, _ = bundle(fp32, dest)
    assert dest.read_bytes() == chosen.read_bytes() == (tmp_path / "model.int8.onnx").read_bytes()
    other = tmp_path / "assets" / "other.onnx"
    with pytest.raises(ValueError, match="over the 0.0001 MB limit"):
        bundle(fp32, other, max_mb=0.0001)
    assert not other.exists()
