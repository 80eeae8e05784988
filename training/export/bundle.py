"""Pick the one file of an export to ship: what ``--precision auto`` would serve, within a size.

``fcn export --quantize int8`` writes ``MODEL.onnx`` (fp32) and ``MODEL.int8.onnx`` and records
in both how the INT8 path scored against fp32 (``precision_checks``). A bundled model is one
file, so this keeps the INT8 copy only when every recorded INT8 check (ONNX Runtime, and
OpenVINO where it was measured) lost at most :data:`service.backends.select.MAX_MIOU_DROP`
mIoU points; otherwise the fp32 file. Either way the chosen file must fit ``--max-mb``.

``fcn export --bundle DEST`` calls :func:`bundle` after the export and its checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.backends.select import MAX_MIOU_DROP, int8_path, parse_checks, verified
from service.metadata import ModelMetadata
from training.export.onnx import read_metadata

MAX_MB = 15.0


def choose(fp32: Path) -> tuple[Path, str]:
    """The file to ship for the fp32 export ``fp32`` and why.

    Raises:
        FileNotFoundError: ``fp32`` is missing.
    """
    if not fp32.is_file():
        raise FileNotFoundError(f"model not found: {fp32}")
    metadata: ModelMetadata = read_metadata(fp32)
    checks = parse_checks(metadata)
    q_path = int8_path(fp32, metadata, checks)
    int8_keys = [k for k in (checks.get("results") or {}) if k.endswith("/int8")]
    if not q_path.is_file() or "ort/int8" not in int8_keys:
        return fp32, "fp32: no checked INT8 copy"
    failed = [k for k in int8_keys if not verified(checks, *k.split("/"))]
    if failed:
        deltas = ", ".join(f"{k} {checks['results'][k]['miou_delta']:+.2f}" for k in failed)
        return fp32, f"fp32: INT8 lost more than {MAX_MIOU_DROP} mIoU point ({deltas})"
    deltas = ", ".join(f"{k} {checks['results'][k]['miou_delta']:+.2f}" for k in int8_keys)
    return q_path, f"int8: within {MAX_MIOU_DROP} mIoU point of fp32 ({deltas})"


def bundle(fp32: Path, dest: Path, *, max_mb: float = MAX_MB) -> tuple[Path, str]:
    """Copy the file :func:`choose` picks to ``dest``; return it and why it was chosen.

    Raises:
        ValueError: the chosen file is over ``max_mb`` megabytes (nothing is copied).
    """
    chosen, reason = choose(fp32)
    size_mb = chosen.stat().st_size / 1e6
    if size_mb > max_mb:
        raise ValueError(f"{chosen} is {size_mb:.1f} MB, over the {max_mb} MB limit ({reason})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen, dest)
    return chosen, f"{size_mb:.1f} MB; {reason}"
