"""The fp32 model behind an INT8 file, recovered, stored as an fp16 source and rebuilt from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from fcn.cli import main
from service.backends.reference import REFERENCE_KEY, ReferenceSet
from service.engine import Engine
from tests.training.test_quantize import fp32_model, int8_model  # noqa: F401 (fixtures)
from training.config import DataConfig
from training.data.datasets import list_pairs
from training.export.onnx import read_metadata
from training.export.recover import (
    RecoverError,
    dequantize_qdq,
    from_fp16_source,
    load_fp16_source,
    save_fp16_source,
)


def _run_dequantize(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """ONNX Runtime's own DequantizeLinear of one weight: the reference for the recovery."""
    tensors = [inits[name] for name in node.input]
    out = helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", list(node.input), ["w"], name="dq")],
        "dq",
        [],
        [out],
        initializer=tensors,
    )
    for attribute in node.attribute:
        graph.node[0].attribute.append(attribute)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {})[0]


@pytest.fixture(scope="module")
def recovered(int8_model, tmp_path_factory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("recovered") / "model.onnx"
    onnx.save(dequantize_qdq(onnx.load(str(int8_model.path))), str(path))
    return path


def test_weights_are_exactly_what_the_int8_model_computes_with(int8_model, recovered) -> None:  # noqa: F811
    proto = onnx.load(str(int8_model.path))
    inits = {t.name: t for t in proto.graph.initializer}
    ours = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(recovered)).graph.initializer}
    weights = [
        n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert weights
    for node in weights:
        assert np.array_equal(ours[node.output[0]], _run_dequantize(node, inits)), node.name


def test_the_graph_is_float_with_the_relus_back(int8_model, recovered) -> None:  # noqa: F811
    proto = onnx.load(str(int8_model.path))
    inits = {t.name: t for t in proto.graph.initializer}
    zero_points = [
        numpy_helper.to_array(inits[n.input[2]])
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear"
    ]
    relu_inputs = {
        q.input[0]
        for q, zp in zip(
            [n for n in proto.graph.node if n.op_type == "QuantizeLinear"], zero_points, strict=True
        )
        if zp.dtype == np.uint8 and not zp.any()
    }
    graph = onnx.load(str(recovered)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    assert ops.count("Relu") == len(relu_inputs) > 0
    meta = read_metadata(recovered)
    assert "quantization" not in meta.extra and not meta.quantized


def test_recovered_model_agrees_with_the_original_fp32(
    fp32_model,  # noqa: F811
    recovered,
    demo_root: Path,
) -> None:
    original, ours = Engine.load(fp32_model), Engine.load(recovered)
    assert ours.precision == "fp32"
    val = list_pairs(DataConfig(root=str(demo_root)), "val")
    agree = [
        np.mean(original.predict(original.decode(p.image)) == ours.predict(ours.decode(p.image)))
        for p in val
    ]
    # int8-rounded weights, float activations: far closer to fp32 than the INT8 model is
    assert np.mean(agree) > 0.98


def test_fp16_source_is_half_the_size_runs_as_is_and_round_trips(recovered, tmp_path) -> None:
    source = save_fp16_source(onnx.load(str(recovered)), tmp_path / "m.fp16.onnx")
    assert source.stat().st_size < 0.55 * recovered.stat().st_size
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), np.float32)
    run = lambda path: ort.InferenceSession(str(path)).run(None, {"image": x})[0]  # noqa: E731
    assert np.array_equal(run(source).argmax(1), run(recovered).argmax(1))
    back = load_fp16_source(source)
    original = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(recovered)).graph.initializer
    }
    for tensor in back.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32:
            expected = original[tensor.name].astype(np.float16).astype(np.float32)
            assert np.array_equal(value, expected), tensor.name
    assert not any(n.op_type == "Cast" for n in back.graph.node)
    with pytest.raises(RecoverError, match="not an fp16 source"):
        from_fp16_source(onnx.load(str(recovered)))
    with pytest.raises(RecoverError, match="not a QDQ"):
        dequantize_qdq(onnx.load(str(recovered)))


def test_cli_rebuilds_quantizes_and_checks_from_a_source(
    recovered, demo_root: Path, tmp_path: Path, capsys
) -> None:
    source = save_fp16_source(onnx.load(str(recovered)), tmp_path / "src.fp16.onnx")
    out, bundled = tmp_path / "rebuilt.onnx", tmp_path / "bundle.onnx"
    args = ["export", "--source", str(source), "--out", str(out), "--quantize", "int8"]
    args += ["--calibration-data", str(demo_root), "--calibration-limit", "4"]
    args += ["--verify-data", str(demo_root), "--bundle", str(bundled)]
    args += ["--metadata", "recipe=rebuilt in a test"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "rebuilt from the fp16 source" in printed and "precision checks on" in printed
    int8 = out.with_name("rebuilt.int8.onnx")
    meta = read_metadata(int8)
    assert meta.extra["quantization"]["reduce_range"] is True
    assert meta.extra["recipe"] == "rebuilt in a test"
    assert "ort/int8" in meta.extra["precision_checks"]["results"]
    refset = ReferenceSet.from_value(meta.extra[REFERENCE_KEY])
    assert refset is not None and len(refset.crops) >= 1
    assert "ort/int8" in refset.recorded
    assert bundled.is_file()
