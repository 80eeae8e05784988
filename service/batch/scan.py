"""Find the images of a batch: files and folders in, one :class:`BatchItem` per image out.

Rules (the ``fcn predict`` behaviour, written once here):

* a file named on the command line is always taken, and lands at the top of the output folder;
* a folder is scanned recursively (or only its top level), in sorted order, for files whose
  suffix is in :data:`service.imaging.IMAGE_EXTENSIONS`; hidden files and folders (``.name``)
  are left out; the output mirrors the tree under the folder;
* ``globs`` filter folder scans: a file is kept when one pattern matches its name or its path
  relative to the folder (``fnmatch`` rules, ``/`` as separator);
* a symlink inside a folder is followed only when its target is inside that folder; one that
  leads outside is reported as skipped, never read; loops are visited once;
* the output folder itself is never scanned (it may sit inside an input folder);
* two inputs that would write the same output name are a collision: the first (in scan order)
  wins, the later one is reported and never overwrites it.

Only paths are collected (a few hundred bytes per image), so a million-image folder is fine.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.imaging import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class BatchItem:
    """One input: where it is, and its output stem relative to the output folder."""

    source: Path
    stem: Path


@dataclass(frozen=True)
class RejectedInput:
    """An input that is not processed, and why.

    Attributes:
        source: the path as found.
        reason: a sentence for the user.
        failed: True for real failures (missing input, name collision); False for inputs left
            out on purpose (a symlink leading outside its folder).
    """

    source: Path
    reason: str
    failed: bool = True


@dataclass
class ScanResult:
    """What a scan found: the items to process, in order, and the inputs it rejected."""

    items: list[BatchItem] = field(default_factory=list)
    rejected: list[RejectedInput] = field(default_factory=list)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _matches(rel: str, name: str, globs: Sequence[str]) -> bool:
    return not globs or any(
        fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(rel, g) for g in globs
    )


def _walk(
    root: Path, *, recursive: bool, exclude: Sequence[str], rejected: list[RejectedInput]
) -> Iterator[Path]:
    """Image-suffixed files under ``root`` in sorted order, following inside symlinks only."""
    real_root = os.path.realpath(root)
    visited = {real_root}

    def visit(folder: Path) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            rejected.append(RejectedInput(folder, f"cannot list folder ({exc.strerror or exc})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            real = os.path.realpath(entry.path)
            if entry.is_symlink() and not _inside(real, real_root):
                rejected.append(
                    RejectedInput(
                        path, "symlink leads outside the input folder; not followed", False
                    )
                )
                continue
            if entry.is_dir():  # follows symlinks, which are inside by now
                if not recursive or real in visited or any(_inside(real, x) for x in exclude):
                    continue
                visited.add(real)
                yield from visit(path)
            elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                yield path

    yield from visit(root)


def scan_inputs(
    paths: Iterable[str | os.PathLike],
    *,
    recursive: bool = True,
    globs: Sequence[str] = (),
    exclude: Iterable[str | os.PathLike] = (),
) -> ScanResult:
    """Expand files and folders into batch items.

    Args:
        paths: files (always used) and folders (scanned).
        recursive: also scan sub-folders, keeping their relative path in the output.
        globs: patterns a folder's file must match (name or relative path); empty keeps all.
        exclude: folders never scanned (the output folder).

    Returns:
        The items in order, and the inputs rejected (missing, collisions, outside symlinks).
    """
    result = ScanResult()
    excluded = [os.path.realpath(p) for p in exclude]
    seen: dict[Path, Path] = {}

    def add(source: Path, stem: Path) -> None:
        if stem in seen:
            reason = f"output name {stem} is already used by {seen[stem]}; not overwritten"
            result.rejected.append(RejectedInput(source, reason))
            return
        seen[stem] = source
        result.items.append(BatchItem(source, stem))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for found in _walk(
                path, recursive=recursive, exclude=excluded, rejected=result.rejected
            ):
                rel = found.relative_to(path)
                if _matches(rel.as_posix(), found.name, globs):
                    add(found, rel.with_suffix(""))
        elif path.is_file():
            add(path, Path(path.stem))
        else:
            result.rejected.append(RejectedInput(path, "no such file or folder"))
    return result
