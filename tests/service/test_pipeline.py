"""The shared decode -> predict -> encode path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import pipeline
from service.engine import Engine
from service.errors import CorruptImageError


def test_segment_and_encode_every_format(conv_model: Path) -> None:
    engine = Engine.load(conv_model)
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (33, 17, 3), dtype=np.uint8)).save(buffer, "PNG")
    seg = pipeline.segment(engine, buffer.getvalue())
    assert (seg.height, seg.width) == (33, 17) and seg.infer_ms > 0
    np.testing.assert_array_equal(seg.mask, engine.predict(seg.pixels))
    index = np.asarray(Image.open(io.BytesIO(pipeline.encode(engine, seg, "index"))))
    np.testing.assert_array_equal(index, seg.mask)
    report = json.loads(pipeline.encode(engine, seg, "json", info={"model": "conv"}))
    assert report["model"] == "conv" and report["pixels"] == 33 * 17
    with pytest.raises(ValueError, match="unknown output format"):
        pipeline.encode(engine, seg, "gif")
    with pytest.raises(CorruptImageError):
        pipeline.segment(engine, b"\x89PNG\r\n\x1a\n broken")
