"""The ``--summary`` file of a batch: one row per input, CSV or JSON, written as results arrive.

Columns: ``path, width, height, milliseconds, status, error`` and one ``fraction_<class>``
per class (the share of the image's pixels in that class). Rows are streamed to a temporary
file next to the target and renamed over it on :meth:`SummaryWriter.close`, so a summary is
either complete or absent, and a million-image run does not hold its rows in memory.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from service.batch.runner import ItemResult
from service.batch.writer import temp_path

SUMMARY_FORMATS = (".csv", ".json")


def summary_row(result: ItemResult, classes: Sequence[str]) -> dict[str, Any]:
    """The summary fields of one result (fractions empty when the image was not segmented)."""
    row: dict[str, Any] = {
        "path": str(result.item.source),
        "width": result.width,
        "height": result.height,
        "milliseconds": round(result.milliseconds, 3),
        "status": result.status,
        "error": result.error,
    }
    fractions = result.fractions or [None] * len(classes)
    row.update({f"fraction_{name}": f for name, f in zip(classes, fractions, strict=True)})
    return row


class SummaryWriter:
    """Stream result rows to ``path`` (``.csv`` or ``.json``, chosen by suffix).

    Raises:
        ValueError: any other suffix.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str]) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in SUMMARY_FORMATS:
            raise ValueError(f"summary file must end in .csv or .json, got {self.path.name!r}")
        self.classes = list(classes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._temp = temp_path(self.path)
        self._handle: TextIO = open(
            self._temp, "w", newline="", encoding="utf-8"
        )  # closed in close()
        self._rows = 0
        if self.kind == ".csv":
            fields = list(summary_row_fields(self.classes))
            self._csv = csv.DictWriter(self._handle, fieldnames=fields)
            self._csv.writeheader()
        else:
            self._handle.write("[")

    def write(self, result: ItemResult) -> None:
        row = summary_row(result, self.classes)
        if self.kind == ".csv":
            self._csv.writerow(row)
        else:
            self._handle.write(("," if self._rows else "") + "\n  " + json.dumps(row))
        self._rows += 1

    def close(self) -> None:
        """Finish the file and move it into place (also after an interrupted run: its rows)."""
        if self.kind == ".json":
            self._handle.write("\n]\n")
        self._handle.close()
        os.replace(self._temp, self.path)


def summary_row_fields(classes: Sequence[str]) -> list[str]:
    """Column names, in order."""
    base = ["path", "width", "height", "milliseconds", "status", "error"]
    return base + [f"fraction_{name}" for name in classes]
