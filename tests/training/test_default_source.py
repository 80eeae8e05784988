"""The default model's fp32 source (models/default/default.fp16.onnx) and the bundle made from it.

The bundle must be what re-quantizing the source gives: its metadata is the source's, its INT8
file records reduced-range weights and carries reference crops, and on the packaged aerial
sample its answer is the fp32 source's on nearly every pixel.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from service.backends.reference import REFERENCE_KEY, ReferenceSet
from service.engine import Engine, EngineConfig
from training.export.onnx import read_metadata
from training.export.recover import rebuild_from_source

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "models" / "default" / "default.fp16.onnx"
BUNDLE = ROOT / "service" / "assets" / "default.onnx"
MAX_SOURCE_BYTES = 30 * 1000 * 1000


def test_the_source_rebuilds_the_bundles_fp32_model(tmp_path: Path) -> None:
    assert SOURCE.stat().st_size <= MAX_SOURCE_BYTES
    fp32 = rebuild_from_source(SOURCE, tmp_path / "default.onnx")
    source_meta, bundle_meta = read_metadata(fp32), read_metadata(BUNDLE)
    assert not source_meta.quantized and bundle_meta.quantized
    assert source_meta.classes == bundle_meta.classes
    assert source_meta.extra["recipe"] == bundle_meta.extra["recipe"]
    quantization = bundle_meta.extra["quantization"]
    assert quantization["reduce_range"] is True and quantization["weights"] == "int8"
    refset = ReferenceSet.from_value(bundle_meta.extra[REFERENCE_KEY])
    assert refset is not None and len(refset.crops) == 4
    assert {"ort/int8", "openvino/int8"} <= set(refset.recorded)

    sample = resources.files("service") / "http" / "web" / "samples" / "dubai-aerial.jpg"
    reference = Engine.load(fp32, EngineConfig(backend="ort", precision="fp32"))
    bundled = Engine.load(BUNDLE, EngineConfig(backend="ort", precision="int8"))
    pixels = reference.decode(sample.read_bytes())
    agreement = float(np.mean(reference.predict(pixels) == bundled.predict(pixels)))
    assert agreement >= 0.97, agreement
