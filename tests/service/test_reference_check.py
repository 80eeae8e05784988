"""The reference crops a model carries: checked on this CPU at load, a failing path refused.

The models are the small test graphs of tests/service/conftest.py; "INT8" siblings are the same
graph marked as quantized (model_pair), so a real check on this CPU agrees 100% with fp32, and
a failing check is simulated the way a worse CPU would look from the model: the export record
of the path says it agreed better than it can here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.backends import load_backend
from service.backends import probe as probe_module
from service.backends.reference import (
    REFERENCE_KEY,
    CheckResult,
    ReferenceSet,
    crop_miou,
    decode_png,
    encode_png,
    predict_crop,
)
from service.engine import Engine, EngineConfig
from service.imaging import normalise_pixels
from service.metadata import ModelMetadata
from tests.service.test_backends import checks, cpu, model_pair, speeds  # noqa: F401 (fixtures)


def reference_value(model: Path, recorded: dict, *, crops: int = 3, side: int = 32) -> dict:
    """A ``reference_set`` for ``model``: random crops and the fp32 model's own answers."""
    runner = load_backend("ort", model, "fp32", EngineConfig())
    meta = ModelMetadata.from_props(runner.metadata_props)
    rng = np.random.default_rng(3)
    entries = []
    for _ in range(crops):
        crop = rng.integers(0, 256, (side, side, meta.in_channels), dtype=np.uint8)
        expected = predict_crop(runner, crop, meta.mean, meta.std)
        entries.append({"image": encode_png(crop), "fp32": encode_png(expected)})
    return {"side": side, "crops": entries, "recorded": recorded}


def with_reference(path: Path, value: dict) -> None:
    """Add ``reference_set`` to a model file's metadata."""
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(path))
    proto.metadata_props.add(key=REFERENCE_KEY, value=json.dumps(value))
    onnx.save(proto, str(path))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_png_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(0)
    for array in (rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), np.arange(12, dtype=np.uint8)):
        array = array.reshape(array.shape[0], -1) if array.ndim == 1 else array
        assert np.array_equal(decode_png(encode_png(array)), array)


def test_normalisation_is_the_engines(make_model) -> None:
    engine = Engine.load(make_model("ref_norm", kind="conv"), EngineConfig(backend="ort"))
    pixels = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    ours = normalise_pixels(pixels, engine.metadata.mean, engine.metadata.std)
    assert ours.tobytes() == engine.normalise(pixels).tobytes()


def test_crop_miou_counts_the_classes_fp32_found() -> None:
    expected = np.array([[0, 0, 1, 1]])
    assert crop_miou(expected, expected) == 100.0
    assert crop_miou(np.array([[0, 0, 0, 1]]), expected) == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    # a class only the candidate predicts costs the classes it took pixels from
    assert crop_miou(np.array([[2, 0, 1, 1]]), expected) == pytest.approx(100 * (1 / 2 + 1) / 2)


def test_check_result_bounds_come_from_the_export_record() -> None:
    crops = (np.zeros((4, 4, 3), np.uint8),)
    expected = (np.array([[0, 0, 1, 1]] * 4, np.uint8),)
    refset = ReferenceSet(crops, expected, {"ort/int8": {"agreement": 99.0, "miou": 95.0}})
    same = refset.check("ort/int8", lambda crop: expected[0])
    assert same.passed and same.min_agreement == 98.0 and same.min_miou == 92.0
    off = refset.check("ort/int8", lambda crop: np.zeros((4, 4), np.uint8))
    assert off.agreement == 50.0 and not off.passed
    assert "bound 98.00%" in off.describe()
    unrecorded = refset.check("openvino/int8", lambda crop: np.zeros((4, 4), np.uint8))
    assert unrecorded.passed and unrecorded.min_agreement is None
    assert CheckResult(**{k: v for k, v in off.to_dict().items() if k != "passed"}) == off


def test_unreadable_reference_sets_are_none() -> None:
    assert ReferenceSet.from_value(None) is None
    assert ReferenceSet.from_value({"crops": []}) is None
    assert ReferenceSet.from_value({"crops": [{"image": "not base64 png"}]}) is None


def load_pair_recorded_at(model_pair, recorded_agreement: float) -> Engine:  # noqa: F811
    """``auto`` on an fp32 + INT8 pair whose export saw ``recorded_agreement`` on the crops.

    The "INT8" file is the fp32 graph, so here it agrees 100%: a record above 101% is a
    check that fails on this CPU.
    """
    fp32 = model_pair(checks(ort__int8=-0.1))
    record = {"ort/int8": {"agreement": recorded_agreement, "miou": 100.0}}
    value = reference_value(fp32, record)
    for path in (fp32, fp32.with_name("m.int8.onnx")):
        with_reference(path, value)
    return Engine.load(fp32, EngineConfig(backend="auto", precision="auto"))


def test_auto_serves_a_path_that_passes_here(cpu, model_pair, speeds) -> None:  # noqa: F811
    cpu(flags=frozenset({"avx2"}), openvino=False)
    speeds({"ort/fp32": 100.0, "ort/int8": 40.0})
    engine = load_pair_recorded_at(model_pair, 100.0)
    assert (engine.backend_name, engine.precision) == ("ort", "int8")
    assert "checked here: agreement 100.00%" in engine.choice.reason
    assert engine.choice.checks["ort/int8"]["passed"] is True


def test_auto_refuses_a_path_that_fails_here_and_says_why(cpu, model_pair, speeds) -> None:  # noqa: F811
    cpu(flags=frozenset({"avx2"}), openvino=False)
    asked = speeds({"ort/fp32": 100.0, "ort/int8": 40.0})
    # The export CPU saw 102% agreement: the bound (101%) cannot be met here.
    engine = load_pair_recorded_at(model_pair, 102.0)
    assert (engine.backend_name, engine.precision) == ("ort", "fp32")
    assert "refused ort/int8 here: agreement 100.00%" in engine.choice.reason
    assert engine.choice.checks["ort/int8"]["passed"] is False
    assert "ort/int8" not in asked  # a refused path is never timed


def test_an_int8_only_model_falls_back_to_the_closest_path_and_says_so(
    cpu,  # noqa: F811
    model_pair,  # noqa: F811
    speeds,  # noqa: F811
) -> None:
    cpu(flags=frozenset({"avx2"}), openvino=False)
    speeds({"ort/int8": 40.0})
    fp32 = model_pair(checks(ort__int8=-0.1))
    int8 = fp32.with_name("m.int8.onnx")
    with_reference(int8, reference_value(fp32, {"ort/int8": {"agreement": 102.0, "miou": 100.0}}))
    engine = Engine.load(int8, EngineConfig(backend="auto", precision="auto"))
    assert (engine.backend_name, engine.precision) == ("ort", "int8")
    assert "no path passed its check on this CPU" in engine.choice.reason


def test_checks_are_cached_with_the_decision(cpu, model_pair, speeds, tmp_path) -> None:  # noqa: F811
    cpu(flags=frozenset({"avx2"}), openvino=False)
    speeds({"ort/fp32": 100.0, "ort/int8": 40.0})
    fp32 = model_pair(checks(ort__int8=-0.1))
    value = reference_value(fp32, {"ort/int8": {"agreement": 100.0, "miou": 100.0}})
    with_reference(fp32.with_name("m.int8.onnx"), value)
    with_reference(fp32, value)
    first = Engine.load(fp32, EngineConfig(backend="auto", precision="auto"))
    cached = json.loads(probe_module.cache_path().read_text())
    assert probe_module.cache_path() == tmp_path / "xdg" / "fcnseg" / "speed-probe.json"
    assert any("checks" in entry for entry in cached.values())
    second = Engine.load(fp32, EngineConfig(backend="auto", precision="auto"))
    assert second.choice == first.choice and second.choice.checks == first.choice.checks
