"""A fake Label Studio on 127.0.0.1 (its export API and task images) and a fake pipeline."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.loop.pipeline import Candidate, Job, StepFailed
from service.loop.tasks import held_out


class FakeLabelStudio:
    """Serves ``/api/projects/{id}/export`` (``self.export``) and ``/data/...`` (``self.files``)."""

    def __init__(self) -> None:
        self.export: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/api/projects/") and "/export" in self.path:
                    body, kind = json.dumps(owner.export).encode(), "application/json"
                elif self.path in owner.files:
                    body, kind = owner.files[self.path], "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def label_studio() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    yield fake
    fake.close()


def annotated_export(count: int, share: float = 0.2) -> list[dict[str, Any]]:
    """``count`` annotated tasks (ids 1..count), with at least one held out and one not."""
    tasks = []
    for task_id in range(1, count + 1):
        result = [{"type": "brushlabels", "value": {"brushlabels": ["a"], "rle": [0]}}]
        tasks.append(
            {
                "id": task_id,
                "data": {"image": f"/data/upload/1/{task_id}.png"},
                "annotations": [{"id": 100 + task_id, "result": result, "updated_at": "x"}],
            }
        )
    sides = {held_out(t["id"], share) for t in tasks}
    assert sides == {True, False}, "pick a count whose ids fall on both sides"
    return tasks


class FakePipeline:
    """Stands in for the subprocess pipeline: the candidate is a given file with given scores.

    ``gate`` (a threading.Event) holds the run until set, so a test can send webhooks while a
    run is going.
    """

    def __init__(self, candidate: Path, miou: float, parent_miou: float, gate=None, fail=None):
        self.candidate, self.miou, self.parent_miou = candidate, miou, parent_miou
        self.gate, self.fail = gate, fail
        self.jobs: list[Job] = []
        self.active = 0
        self.max_active = 0  # runs going at the same time, at most

    def __call__(self) -> FakePipeline:
        return self

    def kill(self) -> None:
        pass

    def run(self, job: Job) -> Candidate:
        self.jobs.append(job)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                self.gate.wait(30)
            if self.fail:
                raise StepFailed("fine-tune", self.fail)
        finally:
            self.active -= 1
        served = job.work / "candidate.onnx"
        shutil.copyfile(self.candidate, served)
        return Candidate(served, served, self.miou, self.parent_miou, {}, {})
