"""Read an ONNX file's ``metadata_props`` without loading its graph or weights.

The backend and precision are chosen from the metadata before any runtime loads the model
(FCN-8s weighs 500 MB: loading it twice to read a few keys would double the start-up time).
The ``onnx`` package is not a serving dependency, so this walks the protobuf wire format:
``ModelProto`` field 14 is ``repeated StringStringEntryProto metadata_props`` (key = 1,
value = 2); every other top-level field is skipped by its length over a memory map.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

_METADATA_PROPS = 14


class _Truncated(ValueError):
    pass


def _varint(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int):
    """Yield ``(field number, wire type, value or (start, end) of the bytes)``."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Truncated("length beyond the end of the message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise _Truncated(f"unsupported wire type {wire}")


def read_metadata_props(path: str | os.PathLike) -> dict[str, str] | None:
    """The ``metadata_props`` of an ONNX file, or ``None`` if it cannot be parsed this way."""
    path = Path(path)
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props: dict[str, str] = {}
            for number, wire, span in _fields(buf, 0, len(buf)):
                if number != _METADATA_PROPS or wire != 2:
                    continue
                entry = {}
                for field, kind, value in _fields(buf, *span):
                    if kind == 2:
                        entry[field] = bytes(buf[value[0] : value[1]]).decode()
                if 1 in entry:
                    props[entry[1]] = entry.get(2, "")
            return props
    except (OSError, ValueError, UnicodeDecodeError):
        return None
