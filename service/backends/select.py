"""Which backend and precision serve a model: the config, the CPU and the recorded checks.

``fcn export`` records, under the metadata key ``precision_checks``, how each faster path
agreed with ONNX Runtime fp32 on validation images (see :func:`parse_checks`). ``auto``
precision decides in three steps:

1. **Accuracy** (recorded with the model): only a path whose mIoU drop is at most
   :data:`MAX_MIOU_DROP` points is a candidate.
2. **What this CPU can run fast at all** (its flags, :mod:`service.backends.cpu`): bf16 only on
   a CPU with native bf16 (AVX512-BF16 or AMX). Elsewhere there are no bf16 kernels to gain
   from (OpenVINO runs such a request in fp32), so it is never a candidate there, whatever was
   recorded, and never timed.
3. **Speed on this CPU** (measured, :mod:`service.backends.probe`): the candidates and the
   fallback run side by side on this machine; the fastest candidate is taken only if it beats
   the fallback by :data:`MIN_SPEEDUP`. INT8 is therefore served only where it was measured
   faster here: on AMX/VNNI CPUs it wins by far; elsewhere (AVX2 only: three instructions per
   int8 dot product instead of one) it is measured, not assumed. Without a measurement
   (``measure=None``) the first candidate in :data:`AUTO_ORDER` is taken.

A model without records, a GPU provider or a missing INT8 file fall back to ONNX Runtime fp32
(the INT8 file itself when that is what was given) without an error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.backends import (
    check_backend,
    check_precision,
    cpu_has_bf16,
    openvino_available,
    openvino_missing,
)
from service.backends.reference import CheckResult
from service.errors import ModelLoadError
from service.metadata import PRECISION_CHECKS_KEY, ModelMetadata

logger = logging.getLogger(__name__)

MAX_MIOU_DROP = 0.5  # mIoU points (0-100 scale) a faster path may lose to be picked by auto
CHECKS_KEY = PRECISION_CHECKS_KEY
MIN_SPEEDUP = 1.1  # how much faster than the fallback a measured candidate must run
# The order candidates are tried without a measurement: fastest first on a 2-core AMX CPU
# (bench/results/backends_bench.json).
AUTO_ORDER: tuple[tuple[str, str], ...] = (
    ("openvino", "int8"),
    ("openvino", "bf16"),
    ("ort", "int8"),
)


@dataclass(frozen=True)
class Choice:
    """The resolved path: which runtime loads which file at which precision, and why."""

    backend: str
    precision: str
    path: Path
    reason: str
    # each path's result on the model's reference crops on this CPU (CheckResult.to_dict())
    checks: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """``"backend/precision"``, as the checks and the probe name a path."""
        return f"{self.backend}/{self.precision}"


def parse_checks(metadata: ModelMetadata | Mapping[str, str]) -> dict[str, Any]:
    """The ``precision_checks`` metadata entry (``{}`` when absent).

    Layout: ``{"reference": {"backend": "ort", "precision": "fp32", "miou": ...},
    "results": {"openvino/bf16": {"miou": ..., "miou_delta": ..., "argmax_agreement": ...},
    ...}, "int8_file": "model.int8.onnx", "images": N, "data": "..."}``; mIoU in points.
    """
    return _metadata(metadata).precision_checks


def _metadata(metadata: ModelMetadata | Mapping[str, str]) -> ModelMetadata:
    if isinstance(metadata, ModelMetadata):
        return metadata
    return ModelMetadata.from_props(metadata)


def verified(checks: Mapping[str, Any], backend: str, precision: str) -> bool:
    """Whether ``backend/precision`` has a recorded mIoU drop of at most MAX_MIOU_DROP."""
    result = (checks.get("results") or {}).get(f"{backend}/{precision}") or {}
    delta = result.get("miou_delta")
    return isinstance(delta, int | float) and -delta <= MAX_MIOU_DROP


def int8_path(path: Path, metadata: ModelMetadata, checks: Mapping[str, Any]) -> Path:
    """Where the INT8 file of an fp32 model is: as recorded, else ``<stem>.int8.onnx``."""
    if metadata.quantized:
        return path
    name = checks.get("int8_file") or f"{path.name.removesuffix('.onnx')}.int8.onnx"
    return path.parent / Path(str(name)).name


# ``measure(paths, in_channels, size_multiple)`` -> median ms per "backend/precision" for the
# ``(backend, precision, file)`` paths it could run (:meth:`SpeedProbe.measure`).
Measure = Callable[[Sequence[tuple[str, str, Path]], int, int], Mapping[str, float]]
# ``verify(paths, metadata)`` -> each path's CheckResult on the reference crops here; ``{}`` when
# the model has no reference crops (:meth:`SpeedProbe.verify`).
Verify = Callable[[Sequence[tuple[str, str, Path]], ModelMetadata], Mapping[str, CheckResult]]


def _uses_gpu(providers: Sequence[str] | None) -> bool:
    if providers is not None:
        return any(p != "CPUExecutionProvider" for p in providers)
    from service.backends.ort import default_providers

    return default_providers()[0] != "CPUExecutionProvider"


def choose_backend(
    path: str | Path,
    props: ModelMetadata | Mapping[str, str],
    *,
    backend: str,
    precision: str,
    providers: Sequence[str] | None = None,
    measure: Measure | None = None,
    verify: Verify | None = None,
) -> Choice:
    """Pick the backend, precision and file for a model.

    Args:
        path: the model file the user gave (fp32, or an INT8 file itself).
        props: its metadata (parsed, or the raw ``metadata_props``).
        backend: ``auto``, ``ort`` or ``openvino``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8``.
        providers: ``EngineConfig.providers`` (a GPU provider keeps ``auto`` on ORT fp32).
        measure: times candidate paths on this CPU (auto only; see the module docstring).
        verify: runs candidate paths on the model's reference crops on this CPU (auto only):
            a path that fails is never served (:mod:`service.backends.reference`).

    Raises:
        ValueError: an unknown name, or an explicit request this model/CPU cannot honour
            (bf16 on ORT or without native bf16, fp32/bf16 of an INT8 file).
        MetadataError: the metadata is missing or invalid.
        ModelLoadError: the openvino backend is named but not installed, or ``int8`` is named
            and there is no INT8 file.
    """
    check_backend(backend)
    check_precision(precision)
    path = Path(path)
    metadata = _metadata(props)
    checks = metadata.precision_checks
    is_int8 = metadata.quantized
    q_path = int8_path(path, metadata, checks)
    if backend == "openvino" and not openvino_available():
        raise openvino_missing()
    gpu = _uses_gpu(providers)
    if backend == "auto":
        backends = ["openvino", "ort"] if openvino_available() and not gpu else ["ort"]
    else:
        backends = [backend]

    if precision != "auto":
        if is_int8 and precision != "int8":
            raise ValueError(
                f"{path.name} is an INT8 (quantized) file; load the fp32 model for {precision}"
            )
        if precision == "bf16":
            if "openvino" not in backends:
                raise ValueError(
                    "precision 'bf16' runs on the openvino backend only (installed: "
                    f"{openvino_available()}); use --backend openvino or another precision"
                )
            if not cpu_has_bf16():
                raise ValueError(
                    "precision 'bf16' needs a CPU with native bf16 (AMX or AVX512-BF16); "
                    "this one has neither: use fp32, int8 or auto"
                )
            return Choice("openvino", "bf16", path, "requested")
        if precision == "int8":
            if not q_path.is_file():
                raise ModelLoadError(
                    f"precision 'int8' needs the INT8 file {q_path} (fcn export --quantize int8)"
                )
            return Choice(backends[0], "int8", q_path, "requested")
        # fp32: with backend auto, today's path (ONNX Runtime).
        return Choice(backends[-1] if backend == "auto" else backend, "fp32", path, "requested")

    if gpu and backend != "openvino":
        return Choice("ort", "int8" if is_int8 else "fp32", path, "GPU provider: as given")
    candidates: list[Choice] = []
    for cand_backend, cand_precision in AUTO_ORDER:
        if cand_backend not in backends:
            continue
        if cand_precision == "bf16" and (is_int8 or not cpu_has_bf16()):
            continue  # no native bf16: nothing to gain, never even timed
        if cand_precision == "int8" and not q_path.is_file():
            continue
        if verified(checks, cand_backend, cand_precision):
            delta = checks["results"][f"{cand_backend}/{cand_precision}"]["miou_delta"]
            chosen = q_path if cand_precision == "int8" else path
            reason = f"auto: verified, mIoU delta {delta:+.2f} points"
            candidates.append(Choice(cand_backend, cand_precision, chosen, reason))
    fallback = (
        Choice(backends[-1], "int8", path, "auto: the file is INT8")
        if is_int8
        else Choice(backends[-1], "fp32", path, "auto: no faster path verified for this model/CPU")
    )
    candidates = [c for c in candidates if c.key != fallback.key]
    if verify is not None and (candidates or is_int8):
        return _checked(candidates, fallback, verify, measure, metadata)
    if not candidates:
        return fallback
    if measure is None:
        return candidates[0]
    return _fastest(candidates, fallback, measure, metadata)


def _checked(
    candidates: list[Choice],
    fallback: Choice,
    verify: Verify,
    measure: Measure | None,
    metadata: ModelMetadata,
) -> Choice:
    """Auto with the reference crops: refuse what fails here, then the fastest of the rest."""
    # fp32 is the reference itself; an INT8 fallback is checked like any candidate.
    to_check = candidates + ([fallback] if fallback.precision != "fp32" else [])
    results = dict(verify([(c.backend, c.precision, c.path) for c in to_check], metadata))
    if not results:  # the model carries no reference crops: recorded checks only
        note = "; not checked on this CPU (the model has no reference crops)"
        chosen = (
            _fastest(candidates, fallback, measure, metadata)
            if candidates and measure is not None
            else (candidates[0] if candidates else fallback)
        )
        return dataclasses.replace(chosen, reason=chosen.reason + note)
    checks = {key: result.to_dict() for key, result in results.items()}
    refused = [c for c in to_check if c.key in results and not results[c.key].passed]
    notes = "".join(f"; refused {c.key} here: {results[c.key].describe()}" for c in refused)
    for choice in refused:
        logger.warning(
            "auto: %s failed its check on this CPU: %s", choice.key, results[choice.key].describe()
        )
    passing = [c for c in candidates if c not in refused]
    if fallback in refused:
        if passing:
            chosen = (
                passing[0]
                if measure is None or len(passing) == 1
                else _fastest(passing[1:], passing[0], measure, metadata)
            )
        else:  # nothing passed and there are no fp32 weights to fall back to
            closest = max(to_check, key=lambda c: (results[c.key].agreement, c.key))
            chosen = dataclasses.replace(
                closest,
                reason=f"auto: no path passed its check on this CPU; serving the closest, "
                f"{closest.key} (export the fp32 model beside it for a verified fallback)",
            )
    elif not passing:
        chosen = fallback
    else:
        chosen = passing[0] if measure is None else _fastest(passing, fallback, measure, metadata)
    passed = results.get(chosen.key)
    verified_here = f"; checked here: {passed.describe()}" if passed and passed.passed else ""
    return dataclasses.replace(chosen, reason=chosen.reason + verified_here + notes, checks=checks)


def _fastest(
    candidates: list[Choice], fallback: Choice, measure: Measure, metadata: ModelMetadata
) -> Choice:
    """The candidate measured fastest here, if it beats the fallback by MIN_SPEEDUP."""
    paths = [(c.backend, c.precision, c.path) for c in (*candidates, fallback)]
    ms = measure(paths, metadata.in_channels, metadata.size_multiple)
    base = ms.get(f"{fallback.backend}/{fallback.precision}")
    timed = [
        (ms[f"{c.backend}/{c.precision}"], c)
        for c in candidates
        if f"{c.backend}/{c.precision}" in ms
    ]
    if base is None or not timed:
        return fallback  # nothing comparable was measured (a path failed to load)
    best_ms, best = min(timed, key=lambda pair: pair[0])
    if best_ms * MIN_SPEEDUP > base:
        reason = (
            f"auto: verified {best.backend} {best.precision} measured no faster here "
            f"({best_ms:.0f} vs {base:.0f} ms)"
        )
        return Choice(fallback.backend, fallback.precision, fallback.path, reason)
    return Choice(
        best.backend,
        best.precision,
        best.path,
        f"{best.reason}; measured {base / best_ms:.1f}x {fallback.backend} {fallback.precision} here",
    )
