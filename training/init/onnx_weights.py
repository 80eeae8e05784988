"""An exported ONNX graph's weights, put back into the torch modules it was exported from.

Every learned layer of the project's models is a convolution (or transposed convolution),
optionally followed by a BatchNorm. In the ONNX file a convolution node reads its weight (and
bias) from initializers; export keeps the torch parameter name for the weight
(``encoder.layer1.0.conv1.weight``; after quantisation ``..._DequantizeLinear_Output``), except
the legacy exporter's folded ones (``onnx::Conv_680``). So each convolution node is matched to a
torch convolution by that name, and the rest in the order both run (shapes must agree). A
BatchNorm node whose parameters carry the torch BatchNorm's names is read as is; a BatchNorm
with no node was folded into its convolution (training/init/batchnorm.py).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from onnx import numpy_helper
from torch import nn

from training.init.batchnorm import CONVS, NORMS, identity_state
from training.init.source import InitError

_SUFFIXES = re.compile(r"(_DequantizeLinear_Output|_quantized|__fp16)+$")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _canonical(name: str) -> str:
    return _SUFFIXES.sub("", name)


def _onnx_convs(proto: Any) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(canonical weight name, weight, bias or None)`` of each Conv/ConvTranspose, in order."""
    inits = {t.name: t for t in proto.graph.initializer}
    convs = []
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        if node.input[1] not in inits:
            raise InitError(
                f"convolution {node.name!r} reads its weight from {node.input[1]!r}, which is "
                "not a stored weight; cannot recover it"
            )
        weight = numpy_helper.to_array(inits[node.input[1]])
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]])
        convs.append((_canonical(node.input[1]), weight, bias))
    return convs


def _onnx_norms(proto: Any) -> dict[str, list[np.ndarray]]:
    """BatchNormalization nodes whose scale is named ``<module>.weight``: module -> params."""
    inits = {t.name: t for t in proto.graph.initializer}
    norms = {}
    for node in proto.graph.node:
        if node.op_type != "BatchNormalization" or node.input[1] not in inits:
            continue
        name = _canonical(node.input[1])
        if name.endswith(".weight"):
            norms[name[: -len(".weight")]] = [
                numpy_helper.to_array(inits[i]) for i in node.input[1:5]
            ]
    return norms


def _match(
    torch_convs: list[str], onnx_convs: list[tuple[str, np.ndarray, np.ndarray | None]]
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """torch conv name -> (weight, bias): by name first, the rest in running order."""
    matched: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    unnamed = []
    wanted = set(torch_convs)
    for name, weight, bias in onnx_convs:
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module in wanted and module not in matched:
            matched[module] = (weight, bias)
        else:
            unnamed.append((weight, bias))
    rest = [name for name in torch_convs if name not in matched]
    if len(rest) != len(unnamed):
        raise InitError(
            f"the ONNX graph has {len(onnx_convs)} convolutions, the model built from its "
            f"metadata {len(torch_convs)}; unmatched: {rest[:5]}"
        )
    for name, (weight, bias) in zip(rest, unnamed, strict=True):
        matched[name] = (weight, bias)
    return matched


def onnx_state(
    graph: nn.Module, proto: Any, convs: list[str], follows: dict[str, str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict of ``graph`` (the module export traced) holding ``proto``'s weights.

    Args:
        graph: the torch module (built from the metadata, fresh weights).
        proto: the fp32 ONNX model.
        convs, follows: from :func:`training.init.batchnorm.trace_modules` on ``graph``.

    Returns:
        ``(state, folded)``: the state dict (class dimensions still the ONNX model's) and the
        BatchNorms that were folded (set to identity; calibrate them before training).

    Raises:
        InitError: convolutions that cannot be matched, or shapes that disagree outside the
            class dimensions.
    """
    modules = dict(graph.named_modules())
    state = {k: v.clone() for k, v in graph.state_dict().items()}
    matched = _match(convs, _onnx_convs(proto))
    norms = _onnx_norms(proto)
    after = {conv: bn for bn, conv in follows.items()}
    folded = []
    for name, (weight, bias) in matched.items():
        conv = modules[name]
        state[f"{name}.weight"] = torch.from_numpy(np.array(weight, dtype=np.float32))
        norm_name = after.get(name)
        bias_t = None if bias is None else torch.from_numpy(np.array(bias, dtype=np.float32))
        if norm_name is not None and norm_name not in norms:  # folded: the bias goes there
            norm = modules[norm_name]
            for key, value in identity_state(norm.num_features, norm.eps, bias_t).items():
                state[f"{norm_name}.{key}"] = value
            folded.append(norm_name)
            if conv.bias is not None:
                state[f"{name}.bias"] = torch.zeros_like(conv.bias)
        elif conv.bias is not None:
            state[f"{name}.bias"] = bias_t if bias_t is not None else torch.zeros_like(conv.bias)
        elif bias_t is not None and np.any(bias):
            raise InitError(f"{name} has a bias in the ONNX graph but none in the torch model")
    for norm_name, values in norms.items():
        if norm_name not in modules or not isinstance(modules[norm_name], NORMS):
            raise InitError(f"BatchNormalization {norm_name!r} has no torch module of that name")
        for key, value in zip(_BN_KEYS, values, strict=True):
            state[f"{norm_name}.{key}"] = torch.from_numpy(np.array(value, dtype=np.float32))
    _check_all_loaded(graph, matched, norms, folded)
    return state, folded


def _check_all_loaded(
    graph: nn.Module,
    matched: dict[str, Any],
    norms: dict[str, Any],
    folded: list[str],
) -> None:
    loaded = set(matched) | set(norms) | set(folded)
    missing = [
        name
        for name, module in graph.named_modules()
        if isinstance(module, (*CONVS, *NORMS)) and name not in loaded
    ]
    other = [
        name
        for name, module in graph.named_modules()
        if not isinstance(module, (*CONVS, *NORMS)) and list(module.parameters(recurse=False))
    ]
    if missing or other:
        raise InitError(
            f"the ONNX graph gives no weights for {(missing + other)[:5]}: it was not exported "
            "from this architecture"
        )
