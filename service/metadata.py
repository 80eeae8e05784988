"""The model description stored in an ONNX file's ``metadata_props`` (docs/contracts.md).

:class:`ModelMetadata` is the one definition of that description: export builds one and writes
it with :meth:`ModelMetadata.to_props`, and every reader (the engine, evaluation, quantization,
the tests) parses it with :meth:`ModelMetadata.from_props`, which checks every key the service
relies on and raises :class:`service.errors.MetadataError` naming the first missing or invalid
one. Each value is JSON-encoded. Torch-free: the serving side imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import MetadataError
from service.rescale import MODEL_INPUT_RANGE

REQUIRED_KEYS: tuple[str, ...] = (
    "arch",
    "classes",
    "palette",
    "in_channels",
    "mean",
    "std",
    "size_multiple",
    "ignore_index",
    "version",
    "num_classes",
)
# Optional keys with a meaning of their own: the builder options (provenance), the raw mask
# value of each class (lets evaluation read a dataset's encoded masks from the model alone), and
# the pixel values the model was trained on (what the bit-depth rule of service.rescale maps
# 12-bit, 16-bit and float inputs to; files without it were trained on 8-bit 0..255).
OPTIONAL_KEYS: tuple[str, ...] = ("options", "mask_values", "input_range")
# The format version export writes; bump when the meaning of a key changes.
METADATA_VERSION = 1
# Metadata format versions this engine understands.
SUPPORTED_VERSIONS: frozenset[int] = frozenset({METADATA_VERSION})


# extra key written by ``fcn export``: each faster path's measured agreement with fp32.
PRECISION_CHECKS_KEY = "precision_checks"


def encode_props(values: Mapping[str, Any]) -> dict[str, str]:
    """Plain values -> ``metadata_props`` strings (each value JSON-encoded)."""
    return {key: json.dumps(value) for key, value in values.items()}


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the service needs to know about a model, as stored in the ONNX file.

    ``extra`` holds every other key (provenance such as ``exporter``, ``opset``,
    ``best_metric``, ``epoch``, ``source``, ``quantization``), JSON-decoded, so a file read and
    written again keeps it.
    """

    arch: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size_multiple: int
    ignore_index: int | None
    num_classes: int
    version: int = METADATA_VERSION
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    mask_values: tuple[int, ...] | None = None
    input_range: tuple[float, float] = MODEL_INPUT_RANGE
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the same keys as ``metadata_props`` (``extra`` included)."""
        values: dict[str, Any] = {
            "arch": self.arch,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "in_channels": self.in_channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "size_multiple": self.size_multiple,
            "ignore_index": self.ignore_index,
            "version": self.version,
            "num_classes": self.num_classes,
            "options": dict(self.options),
            "mask_values": None if self.mask_values is None else list(self.mask_values),
            "input_range": list(self.input_range),
        }
        clash = sorted(set(self.extra) & set(values))
        if clash:
            raise MetadataError(clash[0], f"extra metadata may not replace required keys {clash}")
        return {**values, **self.extra}

    @property
    def precision_checks(self) -> dict[str, Any]:
        """What ``fcn export`` measured for each faster path (``{}`` if nothing; see
        :func:`service.backends.select.parse_checks`): what ``precision="auto"`` may serve."""
        value = self.extra.get(PRECISION_CHECKS_KEY)
        return dict(value) if isinstance(value, Mapping) else {}

    @property
    def quantized(self) -> bool:
        """Whether this file is an INT8 (quantized) model (it has a ``quantization`` entry)."""
        return "quantization" in self.extra

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` to write: every key, each value JSON-encoded."""
        return encode_props(self.to_dict())

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ModelMetadata:
        """Decode and validate ``metadata_props``: the one reader of the description.

        Args:
            props: the raw key -> JSON string mapping from the ONNX model.

        Raises:
            MetadataError: a key is missing, is not JSON, or has the wrong type, length or
                range.
        """
        return _parse(props)


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MetadataError(key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _floats(key: str, value: Any, length: int, positive: bool) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise MetadataError(key, f"expected a list of {length} numbers, got {value!r}")
    for v in value:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (positive and v <= 0):
            kind = "positive numbers" if positive else "finite numbers"
            raise MetadataError(key, f"expected {kind}, got {value!r}")
    return tuple(float(v) for v in value)


def _parse(props: Mapping[str, str]) -> ModelMetadata:
    values: dict[str, Any] = {}
    for key in REQUIRED_KEYS:
        if key not in props:
            raise MetadataError(key, "missing; re-export the model to embed it")
        try:
            values[key] = json.loads(props[key])
        except (TypeError, ValueError) as exc:
            raise MetadataError(key, f"value is not valid JSON: {props[key]!r}") from exc

    version = _int("version", values["version"], 1)
    if version not in SUPPORTED_VERSIONS:
        raise MetadataError(
            "version",
            f"format version {version} is not supported (this service reads "
            f"{sorted(SUPPORTED_VERSIONS)}); upgrade the service",
        )
    arch = values["arch"]
    if not isinstance(arch, str) or not arch:
        raise MetadataError("arch", f"expected a non-empty string, got {arch!r}")
    num_classes = _int("num_classes", values["num_classes"], 1)
    if num_classes > 65536:  # masks are uint16 at most
        raise MetadataError(
            "num_classes", f"at most 65536 classes are supported, got {num_classes}"
        )
    in_channels = _int("in_channels", values["in_channels"], 1)
    if in_channels not in (1, 3, 4):
        raise MetadataError("in_channels", f"expected 1, 3 or 4, got {in_channels}")

    classes = values["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) != num_classes
        or not all(isinstance(c, str) for c in classes)
    ):
        raise MetadataError("classes", f"expected {num_classes} class names, got {classes!r}")
    palette = values["palette"]
    if not isinstance(palette, list) or len(palette) != num_classes:
        raise MetadataError("palette", f"expected {num_classes} [r, g, b] colours")
    for colour in palette:
        if (
            not isinstance(colour, list)
            or len(colour) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in colour)
            or not all(0 <= v <= 255 for v in colour)
        ):
            raise MetadataError("palette", f"expected [r, g, b] with 0..255 ints, got {colour!r}")

    ignore_index = values["ignore_index"]
    if ignore_index is not None:
        ignore_index = _int("ignore_index", ignore_index, 0)
    options, mask_values, extra = _optional(props, num_classes)
    input_range = _input_range(extra.pop("input_range", None))
    return ModelMetadata(
        arch=arch,
        classes=tuple(classes),
        palette=tuple((c[0], c[1], c[2]) for c in palette),
        in_channels=in_channels,
        mean=_floats("mean", values["mean"], in_channels, positive=False),
        std=_floats("std", values["std"], in_channels, positive=True),
        size_multiple=_int("size_multiple", values["size_multiple"], 1),
        ignore_index=ignore_index,
        version=version,
        num_classes=num_classes,
        options=options,
        mask_values=mask_values,
        input_range=input_range,
        extra=extra,
    )


def _input_range(value: Any) -> tuple[float, float]:
    """The optional ``input_range`` (absent or null: 0..255, what every older file means).

    The service maps its inputs to 0..255 only (:mod:`service.rescale`), so a model declaring
    another range is refused rather than fed values it was not trained on.
    """
    if value is None:
        return MODEL_INPUT_RANGE
    lo, hi = MODEL_INPUT_RANGE
    numbers = _floats("input_range", value, 2, positive=False)
    if numbers != MODEL_INPUT_RANGE:
        raise MetadataError(
            "input_range",
            f"this service feeds models 8-bit values ({lo:g}..{hi:g}); the file declares "
            f"{numbers[0]:g}..{numbers[1]:g}",
        )
    return numbers


def _optional(
    props: Mapping[str, str], num_classes: int
) -> tuple[dict[str, Any], tuple[int, ...] | None, dict[str, Any]]:
    """``options``, ``mask_values`` and every other non-required key, decoded."""
    extra: dict[str, Any] = {}
    for key, raw in props.items():
        if key in REQUIRED_KEYS:
            continue
        try:
            extra[key] = json.loads(raw)
        except (TypeError, ValueError) as exc:
            if key in OPTIONAL_KEYS:
                raise MetadataError(key, f"value is not valid JSON: {raw!r}") from exc
            extra[key] = raw  # a foreign key: kept as written
    options = extra.pop("options", None) or {}
    if not isinstance(options, dict):
        raise MetadataError("options", f"expected a JSON object, got {options!r}")
    mask_values = extra.pop("mask_values", None)
    if mask_values is not None:
        if (
            not isinstance(mask_values, list)
            or len(mask_values) != num_classes
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in mask_values)
            or not all(0 <= v <= 65535 for v in mask_values)
            or len(set(mask_values)) != len(mask_values)
        ):
            raise MetadataError(
                "mask_values",
                f"expected {num_classes} distinct integers in 0..65535, got {mask_values!r}",
            )
        mask_values = tuple(mask_values)
    return options, mask_values, extra
