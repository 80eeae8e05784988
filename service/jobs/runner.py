"""One worker thread runs the queued jobs, one at a time, with the raster pipeline of
``fcn predict``: :func:`service.geo.run.segment_raster` on the served model's engine, then
:func:`service.geo.vectors.write_mask_vectors` when the job asks for vectors.

A job is stopped between strips (the pipeline's ``after_strip`` hook): cancelled, it is
marked ``cancelled`` and its files deleted; stopped with the service, it goes back to
``queued`` and its resume sidecar stays, so the next start continues it. At start,
:meth:`JobRunner.recover` queues the ``queued`` jobs again and resumes the ``running`` ones
(a process killed mid-job) whose sidecar still matches; a job that cannot go on (input gone,
model no longer served or changed, sidecar unusable) becomes ``lost`` with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import UnknownJobError
from service.jobs.store import ACTIVE, JobRequest, JobStore

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised between strips when the job was cancelled or the service is stopping."""


class Lost(Exception):
    """The job cannot run any more; the message says why."""


def geo_options(request: JobRequest, streams: int):
    """The :class:`~service.geo.run.GeoOptions` of a job (always resuming its own files)."""
    from service.geo.run import GeoOptions

    return GeoOptions(
        bands=request.bands,
        rescale=request.rescale,
        probabilities=request.probabilities,
        resume=True,
        streams=streams,
        model=request.model,
    )


class JobRunner:
    """The queue and the worker thread.

    Args:
        store: the jobs folder.
        lookup: model name -> the served model (``.engine``, ``.version``), or None.
        streams: windows a job runs at once (:class:`~service.geo.run.GeoOptions`).
    """

    def __init__(self, store: JobStore, lookup: Callable[[str], Any], streams: int = 1) -> None:
        self.store = store
        self.lookup = lookup
        self.streams = streams
        self.current: str | None = None
        self.tiles_run = 0  # windows run by jobs since the start (a metric)
        self._queue: deque[str] = deque()
        self._wake = threading.Condition()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Recover the jobs a previous process left, then start the worker thread."""
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="fcn-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Stop after the running job's current strip (it stays resumable) and join."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job_id: str) -> None:
        with self._wake:
            self._queue.append(job_id)
            self._wake.notify()

    def add(self, job_id: str, request: JobRequest, in_channels: int) -> dict:
        """Check the raster as the pipeline will open it, then record and queue the job.

        Raises:
            UnsupportedFormatError, GeoInputError, GeoDependencyError: as
                :func:`service.geo.inputs.check_georaster`.
        """
        from service.geo.inputs import check_georaster

        check_georaster(
            request.input,
            in_channels,
            bands=request.bands,
            rescale=request.rescale,
            name=request.source,
        )
        status = self.store.create(job_id, request)
        self.submit(job_id)
        return status

    def cancel(self, job_id: str) -> str:
        """Cancel a queued/running job (``"cancelled"``, its files deleted, its record kept)
        or remove a finished one (``"deleted"``).

        Raises:
            UnknownJobError: no such job.
        """
        store = self.store
        with store.lock:
            if store.read(job_id)["status"] not in ACTIVE:
                store.delete(job_id)
                return "deleted"
            store.update(job_id, status="cancelled", finished=time.time(), outputs=[])
            self._cancelled.add(job_id)
            running = job_id == self.current
        if not running:  # a running job's files are deleted by the worker once it stops
            with self._wake:
                if job_id in self._queue:
                    self._queue.remove(job_id)
            store.clear_outputs(job_id)
            self._cancelled.discard(job_id)
        return "cancelled"

    def counts(self) -> dict[str, int]:
        """Jobs by status (for the metrics)."""
        counts: dict[str, int] = {}
        for status in self.store.all():
            counts[status["status"]] = counts.get(status["status"], 0) + 1
        return counts

    def recover(self) -> None:
        """Queue again what a previous process left queued or running, or mark it lost."""
        for status in self.store.all():
            if status.get("status") not in ACTIVE:
                continue
            job_id = status["id"]
            reason = self._resume_problem(job_id, status["status"])
            if reason is not None:
                logger.warning("job %s is lost: %s", job_id, reason)
                self.store.update(job_id, status="lost", error=reason, finished=time.time())
                continue
            logger.info("job %s (%s before the restart) is queued again", job_id, status["status"])
            self.store.update(job_id, status="queued")
            self._queue.append(job_id)

    def _resume_problem(self, job_id: str, state: str) -> str | None:
        """Why a job left ``state`` by a previous process cannot go on, or None."""
        from service.batch.runner import describe_error
        from service.geo.run import saved_strips

        try:
            request = self.store.request(job_id)
        except (OSError, ValueError, TypeError):
            return "its request file is unreadable"
        try:
            loaded = self._model(request)
        except Lost as exc:
            return str(exc)
        if state != "running":
            return None
        try:
            exists, done = saved_strips(
                loaded.engine, request.input, self._stem(job_id, request), geo_options(request, 1)
            )
        except Exception as exc:  # the input changed into something that no longer opens
            return f"its input cannot be read any more ({describe_error(exc)})"
        if exists and done is None:
            return "its saved partial run (the resume sidecar) no longer matches the input"
        return None

    def _model(self, request: JobRequest):
        if not Path(request.input).is_file():
            raise Lost(f"its input {request.source!r} is gone")
        loaded = self.lookup(request.model)
        if loaded is None:
            raise Lost(f"model {request.model!r} is no longer served")
        if loaded.version != request.model_version:
            raise Lost(
                f"model {request.model!r} is now version {loaded.version}; the job started "
                f"with {request.model_version}"
            )
        return loaded

    def _stem(self, job_id: str, request: JobRequest) -> Path:
        return self.store.dir(job_id) / Path(request.input).stem

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping.is_set():
                    self._wake.wait()
                if self._stopping.is_set():
                    return
                job_id = self._queue.popleft()
            try:
                self._run(job_id)
            except UnknownJobError:  # deleted while queued
                continue
            except Exception:  # never let one job end the worker
                logger.exception("job %s: unexpected failure", job_id)

    def _run(self, job_id: str) -> None:
        from service.batch.runner import describe_error

        store = self.store
        request = store.request(job_id)
        with store.lock:
            if not store.update(job_id, expect=ACTIVE, status="running", started=time.time()):
                return  # cancelled while queued
            self.current = job_id
        try:
            changes = self._segment(job_id, request)
        except Interrupted:
            if job_id not in self._cancelled:  # the service is stopping: resume next start
                store.update(job_id, expect=frozenset({"running"}), status="queued")
        except Lost as exc:
            store.update(job_id, status="lost", error=str(exc), finished=time.time())
        except Exception as exc:  # a job that fails says why in its status, never a 500
            logger.warning("job %s failed: %s", job_id, describe_error(exc))
            store.update(job_id, status="failed", error=describe_error(exc), finished=time.time())
        else:
            store.update(job_id, expect=frozenset({"running"}), **changes)
        finally:
            with store.lock:
                self.current = None
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                store.clear_outputs(job_id)

    def _check(self, job_id: str) -> None:
        if job_id in self._cancelled or self._stopping.is_set():
            raise Interrupted

    def _segment(self, job_id: str, request: JobRequest) -> dict:
        """Run the pipeline; returns the ``done`` status changes."""
        from service.geo.run import segment_raster
        from service.geo.vectors import VectorOptions, write_mask_vectors

        loaded = self._model(request)
        stem = self._stem(job_id, request)

        def on_progress(progress) -> None:
            done = {"tiles_done": progress.tiles_done, "tiles": progress.tiles_total}
            done |= {"km2_done": progress.km2_done, "km2": progress.km2_total}
            self.store.update(job_id, progress=done)

        def after_strip(strip) -> None:
            self.tiles_run += strip.tiles_run
            self._check(job_id)

        result = segment_raster(
            loaded.engine,
            request.input,
            stem,
            geo_options(request, self.streams),
            on_progress=on_progress,
            after_strip=after_strip,
        )
        self._check(job_id)
        outputs = [path.name for path in result.outputs]
        if request.vectors:
            options = VectorOptions(**request.vectors)
            classes = loaded.engine.metadata.classes
            outputs.append(write_mask_vectors(result.outputs[0], stem, options, classes).path.name)
            self._check(job_id)
        progress = {"tiles_done": result.tiles, "tiles": result.tiles}
        return {
            "status": "done",
            "finished": time.time(),
            "outputs": outputs,
            "progress": progress | {"km2_done": result.km2, "km2": result.km2},
            "resumed_strips": result.strips_resumed,
            "tiles_run": result.tiles_run,
            "seconds": round(result.seconds, 3),
        }
