"""Recover the float model an INT8 (QDQ) file was quantized from, and store it compactly.

A static QDQ file keeps every weight as ``int8 x scale`` behind a ``DequantizeLinear`` and
every quantized activation as a ``QuantizeLinear -> DequantizeLinear`` pair. Dequantizing the
weights gives exactly the numbers the INT8 model computes with; dropping the activation pairs
gives the float graph. One thing the quantizer folds away must come back: a ReLU whose output
is quantized to uint8 with zero point 0 is removed, since the quantization clips at 0 itself.
So a ``Relu`` is put back wherever an activation's uint8 zero point is 0 (for a tensor that was
non-negative anyway, a ReLU changes nothing).

Public API::

    fp32 = dequantize_qdq(onnx.load("default.onnx"))      # an fp32 ModelProto
    save_fp16_source(fp32, "default.fp16.onnx")            # half the bytes, still runnable
    fp32 = load_fp16_source("default.fp16.onnx")           # back to fp32 initializers

The fp16 *source* file stores each float initializer as float16 behind a ``Cast`` to float, so
ONNX Runtime runs it as it is (the casts fold at load) and :func:`load_fp16_source` turns it
back into a plain fp32 graph for export or quantization.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from training.export.onnx import save_onnx

QUANTIZATION_KEY = "quantization"
_FP16_SUFFIX = "__fp16"
_FP16_MAX = float(np.finfo(np.float16).max)


class RecoverError(ValueError):
    """The file is not a QDQ model this module can take apart (or not an fp16 source)."""


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float64)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float64)
    if scale.ndim == 1 and scale.size > 1:  # per-axis: scales along ``axis``
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale.astype(np.float64)).astype(np.float32)


def dequantize_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 graph of a QDQ model: dequantized weights, no activation QDQ, ReLUs restored.

    Raises:
        RecoverError: the graph has no QuantizeLinear/DequantizeLinear, or a pair this
            function does not understand (a DequantizeLinear fed by something other than an
            initializer or a QuantizeLinear).
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    position = {id(node): i for i, node in enumerate(graph.node)}
    if not any(n.op_type == "DequantizeLinear" for n in graph.node):
        raise RecoverError("no DequantizeLinear nodes: this is not a QDQ (INT8) model")

    new_inits: dict[str, onnx.TensorProto] = {}
    rename: dict[str, str] = {}  # a dequantized activation -> the float tensor it stands for
    relus: dict[str, str] = {}  # float tensor -> its restored ReLU output
    drop: set[int] = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        source = node.input[0]
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else None
        if source in inits:
            weights = _dequantize(numpy_helper.to_array(inits[source]), scale, zero, axis)
            new_inits[node.output[0]] = numpy_helper.from_array(weights, node.output[0])
        elif source in producer and producer[source].op_type == "QuantizeLinear":
            quantize = producer[source]
            value = quantize.input[0]
            unsigned = inits[quantize.input[2]].data_type == onnx.TensorProto.UINT8
            if unsigned and zero is not None and not np.any(zero):
                relus.setdefault(value, f"{value}__relu")
                value = relus[value]
            rename[node.output[0]] = value
            drop.add(position[id(quantize)])
        else:
            raise RecoverError(f"DequantizeLinear {node.name!r} reads {source!r}, not a weight")
        drop.add(index)

    kept = [n for i, n in enumerate(graph.node) if i not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    # A graph output that was a dequantized activation keeps its name through an Identity.
    for output in graph.output:
        if output.name in rename:
            kept.append(helper.make_node("Identity", [rename[output.name]], [output.name]))
    restored = [helper.make_node("Relu", [v], [r], name=r) for v, r in relus.items()]
    # ReLU nodes go right after the node that makes their input, keeping topological order.
    ordered: list[onnx.NodeProto] = []
    pending = defaultdict(list)
    for relu in restored:
        pending[relu.input[0]].append(relu)
    graph_inputs = [i.name for i in graph.input]
    for name in graph_inputs:
        ordered.extend(pending.pop(name, []))
    for node in kept:
        ordered.append(node)
        for out in node.output:
            ordered.extend(pending.pop(out, []))
    if pending:
        raise RecoverError(f"could not place restored ReLUs for {sorted(pending)}")

    used = {name for node in ordered for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used] + [
        t for name, t in new_inits.items() if name in used
    ]
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]  # shapes/types of removed tensors; ORT infers them again
    for key in (QUANTIZATION_KEY, "precision_checks", "reference_set"):
        _drop_prop(model, key)  # they described the INT8 file
    return model


def to_fp16_source(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float initializers stored as float16, each read through a ``Cast`` back to float.

    Raises:
        RecoverError: a weight does not fit float16's range.
    """
    graph = model.graph
    casts = []
    for tensor in graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(tensor)
        if array.size and float(np.abs(array).max()) > _FP16_MAX:
            raise RecoverError(f"{tensor.name} exceeds float16's range; keep it fp32")
        half = numpy_helper.from_array(array.astype(np.float16), tensor.name + _FP16_SUFFIX)
        tensor.CopyFrom(half)
        casts.append(
            helper.make_node(
                "Cast", [half.name], [half.name[: -len(_FP16_SUFFIX)]], to=onnx.TensorProto.FLOAT
            )
        )
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    model.metadata_props.add(key="fp16_source", value=json.dumps(True))
    return model


def from_fp16_source(model: onnx.ModelProto) -> onnx.ModelProto:
    """Inverse of :func:`to_fp16_source`: fp32 initializers, the casts removed.

    Raises:
        RecoverError: the file is not an fp16 source written by :func:`to_fp16_source`.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0].endswith(_FP16_SUFFIX)]
    if not casts:
        raise RecoverError("not an fp16 source file (no float16 weights behind a Cast)")
    for cast in casts:
        half = inits[cast.input[0]]
        array = numpy_helper.to_array(half).astype(np.float32)
        half.CopyFrom(numpy_helper.from_array(array, cast.output[0]))
    nodes = [n for n in graph.node if n not in casts]
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_prop(model, "fp16_source")
    return model


def save_fp16_source(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` (fp32) as an fp16 source file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_onnx(to_fp16_source(model), path)
    return path


def load_fp16_source(path: str | os.PathLike) -> onnx.ModelProto:
    """An fp16 source file as a plain fp32 model."""
    return from_fp16_source(onnx.load(str(path)))


def rebuild_from_source(
    source: str | os.PathLike, out: str | os.PathLike, metadata: dict[str, object] | None = None
) -> Path:
    """Write the fp32 model of an fp16 source file to ``out`` (plus extra metadata entries).

    Raises:
        RecoverError: ``source`` is not an fp16 source file.
        FileNotFoundError: ``source`` is missing.
    """
    source, out = Path(source), Path(out)
    if not source.is_file():
        raise FileNotFoundError(f"fp16 source not found: {source}")
    proto = load_fp16_source(source)
    for key, value in (metadata or {}).items():  # each value JSON-encoded, as export does
        _drop_prop(proto, key)
        proto.metadata_props.add(key=key, value=json.dumps(value))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_onnx(proto, out)
    return out


def write_fp16_source(fp32: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Keep an fp32 export's weights as an fp16 source file at ``dest``."""
    proto = onnx.load(str(fp32))
    for key in ("precision_checks", "reference_set", QUANTIZATION_KEY):
        _drop_prop(proto, key)
    return save_fp16_source(proto, dest)


def _drop_prop(model: onnx.ModelProto, key: str) -> None:
    entries = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.export.recover INT8.onnx FP16_SOURCE.onnx``: recover and store."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("int8", type=Path, help="a static INT8 (QDQ) model")
    parser.add_argument("dest", type=Path, help="the fp16 source file to write")
    args = parser.parse_args(argv)
    save_fp16_source(dequantize_qdq(onnx.load(str(args.int8))), args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
