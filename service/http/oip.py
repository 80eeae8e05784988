"""The Open Inference Protocol's (KServe V2 / Triton HTTP) tensors: request in, response out.

A request body is the JSON inference request, optionally followed by the binary data of its
inputs (Triton's binary tensor data extension): the ``Inference-Header-Content-Length`` header
gives the JSON's length, each binary input carries ``parameters.binary_data_size``, and the
binary parts follow the JSON in the order of the inputs. Binary tensors are little-endian, row
major; a BYTES element is a 4-byte little-endian length followed by that many bytes. In the JSON
form a BYTES element is a base64 string here (an encoded image is not UTF-8 text).

Nothing here knows about HTTP or models: :func:`parse_request` raises :class:`ProtocolError`
(a 400) and :func:`encode_response` returns the body and the JSON header's length.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Protocol datatype -> numpy dtype (little-endian); BYTES is handled on its own.
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}
BYTES = "BYTES"
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(ValueError):
    """The request does not follow the protocol, or not what the model takes.

    Attributes:
        status: the HTTP status to answer (400 unless said otherwise).
        code: the machine-readable error code sent beside the message.
    """

    def __init__(self, message: str, status: int = 400, code: str = "bad_inference_request"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    """``$inference_request`` (unknown fields are kept and ignored)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class Tensor:
    """One decoded input: a numpy array, or for BYTES a list of ``bytes`` elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    value: np.ndarray | list[bytes]


@dataclass(frozen=True)
class Request:
    """A parsed inference request: its inputs by name and the outputs asked for."""

    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[RequestOutput] | None
    binary_output: bool
    parameters: dict[str, Any]

    def wants_binary(self, output: RequestOutput | None) -> bool:
        """Whether an output goes out as binary data (its own ``binary_data`` wins)."""
        if output is not None and "binary_data" in output.parameters:
            return output.parameters["binary_data"] is True
        return self.binary_output


def _message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    return "invalid inference request: " + "; ".join(parts)


def header_length(value: str | None, body_length: int) -> int | None:
    """The JSON part's length from ``Inference-Header-Content-Length`` (None: all JSON).

    Raises:
        ProtocolError: not an integer, or outside ``[0, body length]``.
    """
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if not 0 < length <= body_length:
        raise ProtocolError(
            f"{HEADER_LENGTH} is {length} but the body has {body_length} bytes; it must give "
            "the length of the JSON part that starts the body"
        )
    return length


def parse_request(body: bytes, json_length: int | None) -> Request:
    """Parse an inference request body (JSON, then the binary data of its inputs).

    Args:
        body: the whole HTTP body.
        json_length: from :func:`header_length`; None when the body is all JSON.

    Raises:
        ProtocolError: malformed JSON, a bad field, a datatype or size that does not add up,
            or binary data left over or missing.
    """
    head = body if json_length is None else body[:json_length]  # pydantic wants bytes
    try:
        parsed = InferenceRequest.model_validate_json(head)
    except ValidationError as exc:
        raise ProtocolError(_message(exc)) from None
    binary = memoryview(body)[len(head) :]
    offset = 0
    inputs: dict[str, Tensor] = {}
    for item in parsed.inputs:
        if item.name in inputs:
            raise ProtocolError(f"input {item.name!r} is given twice")
        if any(d < 0 for d in item.shape):
            raise ProtocolError(f"input {item.name!r}: negative dimension in shape {item.shape}")
        size = item.parameters.get("binary_data_size")
        if size is None:
            value = _from_json(item)
        else:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input {item.name!r}: binary_data_size must be an int >= 0")
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {item.name!r}: binary_data_size {size} runs past the end of the "
                    f"body ({len(binary) - offset} bytes of binary data left)"
                )
            value = _from_binary(item, binary[offset : offset + size])
            offset += size
        inputs[item.name] = Tensor(item.name, item.datatype, tuple(item.shape), value)
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes after the JSON are not claimed by any input's "
            f"binary_data_size (is {HEADER_LENGTH} right?)"
        )
    binary_output = parsed.parameters.get("binary_data_output") is True
    return Request(parsed.id, inputs, parsed.outputs, binary_output, parsed.parameters)


def _elements(shape: list[int]) -> int:
    return math.prod(shape)


def _dtype(item: RequestInput) -> np.dtype:
    try:
        return DATATYPES[item.datatype]
    except KeyError:
        raise ProtocolError(
            f"input {item.name!r}: unknown datatype {item.datatype!r}; one of "
            f"{', '.join([*DATATYPES, BYTES])}"
        ) from None


def _from_binary(item: RequestInput, data: memoryview) -> np.ndarray | list[bytes]:
    if item.datatype == BYTES:
        elements = _split_bytes(item.name, data)
        if len(elements) != _elements(item.shape):
            raise ProtocolError(
                f"input {item.name!r}: shape {item.shape} holds {_elements(item.shape)} "
                f"element(s) but the binary data has {len(elements)}"
            )
        return elements
    dtype = _dtype(item)
    expected = _elements(item.shape) * dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(
            f"input {item.name!r}: shape {item.shape} of {item.datatype} is {expected} bytes "
            f"but binary_data_size is {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(item.shape)


def _split_bytes(name: str, data: memoryview) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then the bytes."""
    elements, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ProtocolError(f"input {name!r}: BYTES data ends inside an element's length")
        length = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(data):
            raise ProtocolError(
                f"input {name!r}: a BYTES element claims {length} bytes but only "
                f"{len(data) - offset} follow"
            )
        elements.append(bytes(data[offset : offset + length]))
        offset += length
    return elements


def _flatten(data: Any) -> list:
    """Row-major elements of nested lists (iterative: no recursion limit to hit)."""
    if not isinstance(data, list):
        return [data]
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _from_json(item: RequestInput) -> np.ndarray | list[bytes]:
    if item.data is None:
        raise ProtocolError(
            f"input {item.name!r} has neither 'data' nor parameters.binary_data_size"
        )
    flat = _flatten(item.data)
    if len(flat) != _elements(item.shape):
        raise ProtocolError(
            f"input {item.name!r}: shape {item.shape} holds {_elements(item.shape)} element(s) "
            f"but 'data' has {len(flat)}"
        )
    if item.datatype == BYTES:
        try:
            return [base64.b64decode(x, validate=True) for x in flat]
        except (binascii.Error, TypeError, ValueError):
            raise ProtocolError(
                f"input {item.name!r}: BYTES elements in JSON must be base64 strings "
                "(or send the tensor as binary data)"
            ) from None
    dtype = _dtype(item)
    try:
        return np.asarray(flat, dtype=dtype).reshape(item.shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"input {item.name!r}: 'data' is not {item.datatype}: {exc}") from None


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype or array.dtype == dtype.newbyteorder("="):
            return name
    raise ValueError(f"no protocol datatype for {array.dtype}")


@dataclass(frozen=True)
class Output:
    """One response tensor and how it is sent."""

    name: str
    array: np.ndarray
    binary: bool


def encode_response(header: dict[str, Any], outputs: list[Output]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length.

    Args:
        header: the response object's fields other than ``outputs`` (model_name, ...).
        outputs: the tensors, in the order the response lists them.
    """
    described, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": datatype_of(out.array),
            "shape": list(out.array.shape),
        }
        if out.binary:
            blob = np.ascontiguousarray(out.array, dtype=out.array.dtype.newbyteorder("<"))
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob.data)
        else:
            entry["data"] = out.array.ravel().tolist()
        described.append(entry)
    head = json.dumps({**header, "outputs": described}, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
