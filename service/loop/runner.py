"""When to fine-tune, one run at a time, and what happens to the result.

Label Studio's webhooks call :meth:`TrainingLoop.notify`. ANNOTATION_CREATED/UPDATED count as
new annotations; a run starts once ``train_after_annotations`` of them arrived, or
``train_after_minutes`` after the first of them (a timer checks), or at once on START_TRAINING.
While a run is going, events only count: when it ends, they start the next run if they are due
(events are merged, never queued one run each). A run (on a worker thread): fetch the export ->
split by task id -> :class:`service.loop.pipeline.Pipeline` -> store the candidate as a version
-> the gate: ``candidate mIoU >= parent mIoU + train_gate_margin`` on the held-out tasks -> when
it holds, make it live and reload (the old version serves until the swap; a reload that fails
puts the parent back). Whatever happens is a :class:`RunRecord` in ``history``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.backends.cpu import cpu_model
from service.loop.label_studio_api import LabelStudioUnreachable, fetch_export
from service.loop.pipeline import Candidate, Job, Pipeline, StepFailed
from service.loop.store import ModelStore
from service.loop.tasks import annotated_tasks, split

logger = logging.getLogger(__name__)
ANNOTATION_EVENTS = frozenset({"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"})
START_EVENTS = frozenset({"START_TRAINING"})
TICK_S = 15.0  # how often the time trigger is checked
WORK = ".loop"  # run folders, inside the models folder


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """One run: ``status`` is promoted, refused (the gate), failed or skipped; ``reason`` why."""

    number: int
    started_at: str
    status: str = "running"
    reason: str = ""
    parent_version: str | None = None
    candidate_version: str | None = None
    heldout_miou: float | None = None
    parent_heldout_miou: float | None = None
    trained_tasks: int = 0
    heldout_tasks: int = 0
    seconds: float = 0.0
    finished_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoopConfig:
    """The loop's settings (from service.http.settings.Settings)."""

    models_dir: Path
    model: str
    label_studio_url: str
    token: str | None
    allowed_hosts: list[str]
    timeout_s: float
    after_annotations: int
    after_minutes: float
    minutes: float
    heldout_share: float
    margin: float


@dataclass
class _Pending:
    count: int = 0
    since: float | None = None
    forced: bool = False
    project: int | None = None
    seen: set[tuple[str, Any]] = field(default_factory=set)


class TrainingLoop:
    """The loop of one served model (see the module docstring)."""

    def __init__(
        self,
        config: LoopConfig,
        reload: Callable[[], Awaitable[bool]],
        pipeline: Callable[[], Pipeline] = Pipeline,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = ModelStore(config.models_dir, config.model)
        self.reload = reload
        self.make_pipeline = pipeline
        self.clock = clock
        self.pending = _Pending()
        self.task: asyncio.Task | None = None
        self.pipeline: Pipeline | None = None
        self.history: list[RunRecord] = []
        self._ticker: asyncio.Task | None = None
        self._trained: tuple[list, list] = ([], [])  # the running job's (train, held-out) tasks

    def status(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "training": self.task is not None,
            "pending_annotations": self.pending.count,
            "project": self.pending.project,
            "runs": [r.as_dict() for r in self.history],
        }

    def notify(self, event: dict[str, Any]) -> dict[str, Any]:
        """Count a webhook event and start a run when one is due (runs in the event loop)."""
        action = str(event.get("action") or "")
        project = event.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if isinstance(project_id, int):
            self.pending.project = project_id
        if action in ANNOTATION_EVENTS:
            annotation = event.get("annotation")
            key = annotation.get("id") if isinstance(annotation, dict) else None
            # The same annotation announced twice (a project webhook beside the one Label
            # Studio adds for its ML backend, or a retry) counts once.
            if key is None or (action, key) not in self.pending.seen:
                self.pending.count += 1
                self.pending.seen.add((action, key))
            self.pending.since = self.pending.since or self.clock()
        elif action in START_EVENTS:
            self.pending.forced = True
        else:
            return {"status": "ignored", "action": action}
        self._ensure_ticker()
        started = self.maybe_start()
        state = "started" if started else ("queued" if self.task else "counted")
        return {"status": state, "pending_annotations": self.pending.count}

    def _due(self) -> bool:
        p, c = self.pending, self.config
        if p.project is None:
            return False
        if p.forced or p.count >= c.after_annotations:
            return True
        return p.since is not None and self.clock() - p.since >= c.after_minutes * 60

    def maybe_start(self) -> bool:
        """Start a run if one is due and none is going."""
        if self.task is not None or not self._due():
            return False
        project, self.pending = self.pending.project, _Pending(project=self.pending.project)
        self.task = asyncio.get_running_loop().create_task(self._run(project))
        return True

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.maybe_start()

    def stop(self) -> None:
        """Kill the running step (the run is recorded as failed) and the timer."""
        if self.pipeline is not None:
            self.pipeline.kill()
        if self._ticker is not None:
            self._ticker.cancel()

    async def _run(self, project: int) -> None:
        record = RunRecord(len(self.history) + 1, _now())
        self.history.append(record)
        start = time.perf_counter()
        try:
            candidate = await asyncio.to_thread(self._train, project, record)
            if candidate is not None:
                await self._decide(candidate, record)
        except Exception as exc:  # the service keeps serving whatever a run does
            record.status, record.reason = "failed", str(exc)
            logger.exception("training run %d failed", record.number)
        finally:
            record.seconds = round(time.perf_counter() - start, 1)
            record.finished_at = _now()
            logger.info("training run %d: %s %s", record.number, record.status, record.reason)
            self.task, self.pipeline = None, None
            self.maybe_start()  # events that arrived meanwhile

    def _clean(self) -> Path:
        """A fresh run folder; what earlier (maybe killed) runs left is removed."""
        root = self.config.models_dir / WORK
        if root.is_dir():
            shutil.rmtree(root, ignore_errors=True)
        work = root / f"run-{len(self.history)}"
        work.mkdir(parents=True)
        return work

    def _train(self, project: int, record: RunRecord) -> Candidate | None:
        c = self.config
        try:
            export = fetch_export(c.label_studio_url, c.token, project, c.timeout_s)
        except LabelStudioUnreachable as exc:
            record.status, record.reason = "failed", str(exc)
            return None
        train, heldout = split(annotated_tasks(export), c.heldout_share)
        record.trained_tasks, record.heldout_tasks = len(train), len(heldout)
        if not train or not heldout:
            record.status = "skipped"
            record.reason = (
                f"{len(train)} training and {len(heldout)} held-out annotated tasks: a run "
                "needs at least one of each (annotate more tasks)"
            )
            return None
        parent = self.store.ensure_live_stored()
        record.parent_version = parent["version"]
        parent_path = self.store.path(parent["version"])
        self._trained = (train, heldout)
        job = Job(
            work=self._clean(),
            parent=parent_path,
            init=self.store.fp32_path(parent["version"]) or parent_path,
            train=train,
            heldout=heldout,
            minutes=c.minutes,
            label_studio_url=c.label_studio_url,
            token=c.token,
            allowed_hosts=list(c.allowed_hosts),
        )
        self.pipeline = self.make_pipeline()
        try:
            return self.pipeline.run(job)
        except StepFailed as exc:
            record.status, record.reason = "failed", str(exc)
            return None

    async def _decide(self, candidate: Candidate, record: RunRecord) -> None:
        c = self.config
        train, heldout = self._trained
        passed = candidate.miou >= candidate.parent_miou + c.margin
        record.heldout_miou, record.parent_heldout_miou = candidate.miou, candidate.parent_miou
        lineage = {
            "parent": record.parent_version,
            "metrics": {"heldout_miou": candidate.miou, "per_class_iou": candidate.per_class},
            "parent_metrics": {
                "heldout_miou": candidate.parent_miou,
                "per_class_iou": candidate.parent_per_class,
            },
            "gate": {"margin": c.margin, "passed": passed},
            "trained_on": {
                "task_ids": [t.task_id for t in train],
                "annotation_ids": [t.annotation_id for t in train],
            },
            "heldout_task_ids": [t.task_id for t in heldout],
            "train_minutes": c.minutes,
            "cpu": cpu_model(),
            "promoted": False,
        }
        stored = await asyncio.to_thread(self.store.add, candidate.served, lineage, candidate.fp32)
        record.candidate_version = stored["version"]
        gap = f"held-out mIoU {candidate.miou:.4f} vs {candidate.parent_miou:.4f} + {c.margin:g}"
        gap += f" ({candidate.note})" if getattr(candidate, "note", "") else ""
        if not passed:
            record.status, record.reason = "refused", f"the gate did not hold: {gap}"
            return
        await asyncio.to_thread(self.store.make_live, stored["version"])
        if not await self.reload():
            await asyncio.to_thread(self.store.make_live, record.parent_version)
            await self.reload()
            record.status, record.reason = "failed", "the candidate did not load; parent restored"
            return
        self.store.update(stored["version"], promoted=True, promoted_at=_now())
        record.status, record.reason = "promoted", gap
