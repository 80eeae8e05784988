"""The jobs folder: one folder per job, its request and a status file replaced atomically.

Layout under the configured jobs folder (``FCN_JOBS_DIR``)::

    .jobs/ID/request.json    what was asked (input path, model and version, options)
    .jobs/ID/status.json     where it stands (replaced atomically: never half written)
    .jobs/ID/input.tif       an uploaded raster (a job by path reads the file in place)
    .jobs/ID/NAME_mask.tif   outputs, and the pipeline's partial files and resume sidecar

A job's ``path`` names a file relative to the jobs folder; anything that resolves outside it
(``..``, an absolute path, a symlink pointing out) or into ``.jobs`` is a
:class:`~service.errors.JobPathError`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import GeoInputError, JobPathError, UnknownJobError
from service.geo.resume import save_json

STATUSES = ("queued", "running", "done", "failed", "lost", "cancelled")
ACTIVE = frozenset({"queued", "running"})
INTERNAL = ".jobs"
UPLOAD_NAME = "input.tif"
_ID = re.compile(r"^[0-9a-f]{32}$")
_KEEP = frozenset({"request.json", "status.json"})


@dataclass(frozen=True)
class JobRequest:
    """What a job runs: the raster, the served model (and its version) and the options."""

    input: str  # absolute path of the raster
    source: str  # what the client named: the relative path, or "upload"
    model: str
    model_version: str
    bands: tuple[int, ...] | None = None
    rescale: tuple[float, float] | None = None
    probabilities: bool = False
    vectors: dict | None = None  # {"driver", "tolerance_m", "crs"}

    @classmethod
    def from_dict(cls, data: dict) -> JobRequest:
        data = dict(data)
        for key in ("bands", "rescale"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


class JobStore:
    """The jobs under ``root/.jobs``; status changes are serialised by one lock."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.folder = self.root / INTERNAL
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def resolve_input(self, relative: str) -> Path:
        """The raster ``relative`` names inside the jobs folder.

        Raises:
            JobPathError: it resolves outside the folder (or into ``.jobs``).
            GeoInputError: there is no such file.
        """
        if "\x00" in relative or Path(relative).is_absolute() or relative.startswith("~"):
            raise JobPathError(f"path must be relative to the jobs folder, got {relative!r}")
        try:
            target = (self.root / relative).resolve()
            inside = target.is_relative_to(self.root) and not target.is_relative_to(self.folder)
            found = inside and target.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            raise GeoInputError(f"cannot open {relative!r} in the jobs folder ({exc})") from None
        if not inside:
            raise JobPathError(f"path {relative!r} leads outside the jobs folder")
        if not found:
            raise GeoInputError(f"no file {relative!r} in the jobs folder")
        return target

    def new(self) -> str:
        """A new, empty job folder; returns its id."""
        job_id = uuid.uuid4().hex
        (self.folder / job_id).mkdir()
        return job_id

    def dir(self, job_id: str) -> Path:
        """The folder of job ``job_id``. Raises UnknownJobError when there is none."""
        path = self.folder / job_id
        if not _ID.match(job_id) or not (path / "status.json").is_file():
            raise UnknownJobError(f"no job {job_id!r}; GET /v1/jobs lists them")
        return path

    def create(self, job_id: str, request: JobRequest) -> dict:
        """Write the request and a ``queued`` status into the folder :meth:`new` made."""
        path = self.folder / job_id
        save_json(path / "request.json", asdict(request))
        status = {
            "id": job_id,
            "status": "queued",
            "source": request.source,
            "model": request.model,
            "created": time.time(),
            "started": None,
            "finished": None,
            "progress": None,
            "error": None,
            "outputs": [],
        }
        save_json(path / "status.json", status)
        return status

    def discard(self, job_id: str) -> None:
        """Remove a job folder, whatever it holds (an upload refused before it was queued)."""
        if _ID.match(job_id):
            shutil.rmtree(self.folder / job_id, ignore_errors=True)

    def request(self, job_id: str) -> JobRequest:
        return JobRequest.from_dict(json.loads((self.dir(job_id) / "request.json").read_text()))

    def read(self, job_id: str) -> dict:
        return json.loads((self.dir(job_id) / "status.json").read_text())

    def update(self, job_id: str, expect: frozenset[str] | None = None, **changes) -> bool:
        """Merge ``changes`` into the status; with ``expect``, only if the status is one of them."""
        with self.lock:
            status = self.read(job_id)
            if expect is not None and status["status"] not in expect:
                return False
            status.update(changes)
            save_json(self.dir(job_id) / "status.json", status)
            return True

    def all(self) -> list[dict]:
        """Every job's status, oldest first (folders without a readable status are skipped)."""
        found = []
        for path in self.folder.iterdir():
            try:
                found.append(json.loads((path / "status.json").read_text()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda s: s.get("created", 0.0))

    def output(self, job_id: str, name: str) -> Path:
        """The file of output ``name`` of a job (only names its status lists)."""
        status = self.read(job_id)
        if name not in status.get("outputs", []):
            listed = ", ".join(status.get("outputs", [])) or "none yet"
            raise UnknownJobError(f"job {job_id} has no output {name!r} (outputs: {listed})")
        return self.dir(job_id) / name

    def clear_outputs(self, job_id: str) -> None:
        """Delete everything in the job's folder but its request and status."""
        for path in self.dir(job_id).iterdir():
            if path.name not in _KEEP:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def delete(self, job_id: str) -> None:
        """Remove the job and its folder."""
        with self.lock:
            shutil.rmtree(self.dir(job_id))
