"""Refuse an ONNX model whose external data lies outside its folder, before any runtime runs.

An ONNX tensor may keep its bytes in another file named by ``external_data`` ``location``
(CVE-2024-27318 and CVE-2024-5187 in ``onnx``: a ``../`` or absolute location reads, or
overwrites, any file). ONNX Runtime >= 1.32 refuses such paths itself, but older releases
and the OpenVINO backend do not, so :func:`check_external_data` walks the model's protobuf
wire format (no ``onnx`` package needed; the weights are skipped by their length over a memory
map) and checks every location of every tensor — graph initializers, sparse initializers,
node attributes, subgraphs and functions — **without opening any of those files**: a location
must be relative, have no ``..`` part, and still lie inside the model's folder once symlinks are
resolved (``os.path.realpath`` reads links, never file contents).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from service.backends.onnx_props import _fields
from service.errors import ModelLoadError

# Field numbers in onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto, ...).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
_ATTR_SPARSE, _ATTR_SPARSES = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL = 8, 13
_DEPTH_LIMIT = 64


def _spans(buf, start: int, end: int, numbers: tuple[int, ...]) -> Iterator[tuple[int, tuple]]:
    for number, wire, value in _fields(buf, start, end):
        if wire == 2 and number in numbers:
            yield number, value


def _tensor_locations(buf, span: tuple[int, int]) -> Iterator[tuple[str, str]]:
    name, location = "", None
    for number, (a, b) in _spans(buf, *span, (_TENSOR_NAME, _TENSOR_EXTERNAL)):
        if number == _TENSOR_NAME:
            name = bytes(buf[a:b]).decode("utf-8", "replace")
            continue
        entry = {
            n: bytes(buf[x:y]).decode("utf-8", "replace") for n, (x, y) in _spans(buf, a, b, (1, 2))
        }
        if entry.get(1) == "location":
            location = entry.get(2, "")
    if location is not None:
        yield name, location


def _sparse_locations(buf, span) -> Iterator[tuple[str, str]]:
    for _, inner in _spans(buf, *span, (_SPARSE_VALUES, _SPARSE_INDICES)):
        yield from _tensor_locations(buf, inner)


def _node_locations(buf, span, depth: int) -> Iterator[tuple[str, str]]:
    for _, attr in _spans(buf, *span, (_NODE_ATTRIBUTE,)):
        wanted = (_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES)
        for number, inner in _spans(buf, *attr, wanted):
            if number in (_ATTR_T, _ATTR_TENSORS):
                yield from _tensor_locations(buf, inner)
            elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                yield from _sparse_locations(buf, inner)
            else:
                yield from _graph_locations(buf, inner, depth + 1)


def _graph_locations(buf, span, depth: int) -> Iterator[tuple[str, str]]:
    if depth > _DEPTH_LIMIT:
        raise ModelLoadError("the model nests subgraphs too deeply to be checked")
    for number, inner in _spans(buf, *span, (_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE)):
        if number == _GRAPH_INITIALIZER:
            yield from _tensor_locations(buf, inner)
        elif number == _GRAPH_SPARSE:
            yield from _sparse_locations(buf, inner)
        else:
            yield from _node_locations(buf, inner, depth)


def external_locations(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(tensor name, location)`` of every tensor stored outside the model file.

    Raises:
        ModelLoadError: the file cannot be read or is not a protobuf message.
    """
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return []
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                found = []
                for number, span in _spans(buf, 0, len(buf), (_MODEL_GRAPH, _MODEL_FUNCTIONS)):
                    if number == _MODEL_GRAPH:
                        found.extend(_graph_locations(buf, span, 0))
                    else:
                        for _, node in _spans(buf, *span, (_FUNCTION_NODE,)):
                            found.extend(_node_locations(buf, node, 1))
                return found
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not a valid ONNX file ({exc})") from exc


def check_external_data(path: str | os.PathLike) -> None:
    """Refuse a model whose external data would be read from outside its folder.

    Raises:
        ModelLoadError: a location is absolute, has a ``..`` part, or resolves (through
            symlinks) outside the model's folder; or the file is not a readable ONNX file.
    """
    path = Path(path)
    folder = Path(os.path.realpath(path.parent))
    for tensor, location in external_locations(path):
        posix, windows = PurePosixPath(location), PureWindowsPath(location)
        why = None
        if not location or "\x00" in location:
            why = "is empty or holds a NUL byte"
        elif posix.is_absolute() or windows.is_absolute() or windows.drive:
            why = "is an absolute path"
        elif ".." in posix.parts or ".." in windows.parts:
            why = "has a '..' part"
        else:
            resolved = Path(os.path.realpath(folder / location))
            if not resolved.is_relative_to(folder):
                why = f"resolves to {resolved}, outside the model's folder (a symlink)"
        if why is not None:
            raise ModelLoadError(
                f"refusing {path}: external data of tensor {tensor!r} at {location!r} {why}; "
                "external data must be a file inside the model's folder"
            )
