"""Output files of a batch: names from the encoder table, atomic writes, resume checks.

Every output is written to a temporary file in its own folder and renamed over the final name
with :func:`os.replace` (atomic on POSIX and Windows within one file system), so a run killed at
any moment leaves each output either complete or absent — never half-written. The temporary
name is fixed per output (``.NAME.fcn-tmp``): a restarted run that processes the same image
truncates and replaces it, so nothing is left behind once every image has been written.
One run per output folder at a time: two runs writing the same outputs share temporary names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from service.batch.scan import BatchItem
from service.formats.registry import get_encoder

TEMP_SUFFIX = ".fcn-tmp"


def output_paths(item: BatchItem, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """The file each requested format of ``item`` is written to (suffixes from ENCODERS)."""
    base = out_dir / item.stem
    return {fmt: base.with_name(base.name + get_encoder(fmt).suffix) for fmt in formats}


def temp_path(target: Path) -> Path:
    """The temporary file ``target`` is written through (hidden, same folder)."""
    return target.with_name(f".{target.name}{TEMP_SUFFIX}")


def atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that ``target`` is never seen half-written.

    Raises:
        OSError: the folder cannot be created or the file written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(target)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def all_exist(paths: Sequence[Path]) -> bool:
    """True when every path is an existing file (the resume test of ``skip_existing``)."""
    return all(p.is_file() for p in paths)
