"""Every version of a served model, with its lineage, in the models folder.

Layout (``models_dir`` is the folder ``fcn serve --models-dir`` serves)::

    models_dir/NAME.onnx                          the version serving now
    models_dir/.versions/NAME/VERSION/model.onnx  each version's served file (byte-identical)
    models_dir/.versions/NAME/VERSION/fp32.onnx   its fp32 model, when it has one (the next
                                                  fine-tune starts from it)
    models_dir/.versions/NAME/VERSION/lineage.json

``VERSION`` is the served file's content hash prefix, the same ``model_version`` the service
answers with. ``lineage.json`` holds the parent version, the held-out metrics, the task and
annotation ids trained on, the time and the CPU. Making a version live copies its file over
``NAME.onnx`` atomically (a rename), then the service reloads it without downtime.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from service.models import check_name, file_sha256

VERSION_DIGITS = 12  # as service.http.served_models.VERSION_DIGITS
VERSIONS = ".versions"


class StoreError(ValueError):
    """An unknown version, or a models folder the store cannot use."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """The versions of model ``name`` kept in ``models_dir``."""

    def __init__(self, models_dir: str | os.PathLike, name: str) -> None:
        self.root = Path(models_dir)
        self.name = check_name(name)
        if not self.root.is_dir():
            raise StoreError(f"models folder not found: {self.root}")
        self.folder = self.root / VERSIONS / self.name

    @property
    def live_path(self) -> Path:
        return self.root / f"{self.name}.onnx"

    def live_version(self) -> str | None:
        path = self.live_path
        return file_sha256(path)[:VERSION_DIGITS] if path.is_file() else None

    def path(self, version: str) -> Path:
        """The stored served file of ``version``.

        Raises:
            StoreError: no such version.
        """
        if not version.isalnum():
            raise StoreError(f"{version!r} is not a version (hex digits)")
        path = self.folder / version / "model.onnx"
        if not path.is_file():
            known = ", ".join(r["version"] for r in self.versions()) or "none"
            raise StoreError(f"model {self.name!r} has no version {version!r}; known: {known}")
        return path

    def fp32_path(self, version: str) -> Path | None:
        path = self.folder / version / "fp32.onnx"
        return path if path.is_file() else None

    def add(
        self, served: Path, lineage: dict[str, Any], fp32: Path | None = None
    ) -> dict[str, Any]:
        """Store ``served`` (and its ``fp32``) as a version; returns its lineage record."""
        version = file_sha256(served)[:VERSION_DIGITS]
        folder = self.folder / version
        _atomic_copy(served, folder / "model.onnx")
        if fp32 is not None:
            _atomic_copy(fp32, folder / "fp32.onnx")
        record = {"version": version, "model": self.name, "created_at": _now(), **lineage}
        record["version"] = version
        self._write(version, record)
        return record

    def ensure_live_stored(self) -> dict[str, Any]:
        """The live file as a version (stored now if it is not yet: the loop's first parent)."""
        version = self.live_version()
        if version is None:
            raise StoreError(f"{self.live_path} does not exist: nothing is serving as {self.name}")
        if (self.folder / version / "lineage.json").is_file():
            return self.record(version)
        return self.add(self.live_path, {"parent": None, "origin": "serving when the loop began"})

    def record(self, version: str) -> dict[str, Any]:
        self.path(version)
        return json.loads((self.folder / version / "lineage.json").read_text())

    def update(self, version: str, **changes: Any) -> dict[str, Any]:
        record = {**self.record(version), **changes}
        self._write(version, record)
        return record

    def _write(self, version: str, record: dict[str, Any]) -> None:
        path = self.folder / version / "lineage.json"
        fd, tmp = tempfile.mkstemp(prefix=".lineage.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, path)

    def versions(self) -> list[dict[str, Any]]:
        """Every stored version's record, oldest first, ``live`` marking the serving one."""
        if not self.folder.is_dir():
            return []
        live = self.live_version()
        records = []
        for entry in self.folder.iterdir():
            lineage = entry / "lineage.json"
            if lineage.is_file() and (entry / "model.onnx").is_file():
                record = json.loads(lineage.read_text())
                records.append({**record, "live": record["version"] == live})
        return sorted(records, key=lambda r: (r.get("created_at", ""), r["version"]))

    def make_live(self, version: str) -> Path:
        """Copy ``version``'s file over the live one (atomically); reload to serve it."""
        _atomic_copy(self.path(version), self.live_path)
        return self.live_path
