"""Runs inside Label Studio's own virtual environment, driven by test_loop_real.py: the scripted
annotator. One argument, a JSON job file; prints one JSON line.

``setup``: create a BrushLabels project, upload the images, add a webhook to the service for
ANNOTATION_CREATED, connect the service as the ML backend. ``annotate``: submit each task's
annotation (brush regions given in the job, ground-truth masks encoded by the test) through
the API, one after another. ``predict``: ask Label Studio to retrieve one task's prediction
from the backend and report the ``model_version`` it stored.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import requests
from label_studio_sdk import LabelStudio


def _setup(job: dict, ls: LabelStudio, headers: dict) -> dict:
    project = ls.projects.create(title="fcnseg loop", label_config=job["config"])
    files = [
        (f"file{i}", (Path(p).name, Path(p).read_bytes())) for i, p in enumerate(job["images"])
    ]
    response = requests.post(
        f"{job['ls_url']}/api/projects/{project.id}/import",
        headers=headers,
        files=files,
        timeout=600,
    )
    response.raise_for_status()
    hook = requests.post(
        f"{job['ls_url']}/api/webhooks/",
        headers=headers,
        json={
            "project": project.id,
            "url": job["backend_url"] + "/webhook",
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": ["ANNOTATION_CREATED"],
        },
        timeout=60,
    )
    hook.raise_for_status()
    ls.ml.create(project=project.id, url=job["backend_url"], title="fcnseg")
    tasks = {
        Path(t.data["image"]).name.split("-", 1)[-1]: t.id
        for t in ls.tasks.list(project=project.id)
    }
    return {"project": project.id, "tasks": tasks}


def _annotate(job: dict, headers: dict) -> dict:
    last = None
    for task_id, result in job["annotations"]:
        response = requests.post(
            f"{job['ls_url']}/api/tasks/{task_id}/annotations/",
            headers=headers,
            json={"result": result, "lead_time": 1.0},
            timeout=120,
        )
        response.raise_for_status()
        last = time.time()
    return {"annotated": len(job["annotations"]), "last_annotation_at": last}


def _predict(job: dict, ls: LabelStudio) -> dict:
    ls.actions.create(
        id="retrieve_tasks_predictions",
        project=job["project"],
        selected_items={"all": False, "included": [job["task"]]},
    )
    predictions = ls.predictions.list(task=job["task"])
    return {"model_versions": [p.model_version for p in predictions]}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    headers = {"Authorization": f"Token {job['token']}"}
    ls = LabelStudio(base_url=job["ls_url"], api_key=job["token"], timeout=600)
    if job["step"] == "setup":
        report = _setup(job, ls, headers)
    elif job["step"] == "annotate":
        report = _annotate(job, headers)
    else:
        report = _predict(job, ls)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
