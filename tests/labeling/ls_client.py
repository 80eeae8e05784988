"""Runs inside Label Studio's own virtual environment (label-studio-sdk), driven by
test_label_studio_real.py. One JSON argument; prints one JSON line with what happened.

Steps, all through Label Studio's API: create a project with a BrushLabels config, upload the
images (they become /data/upload/... tasks), connect the service as the ML backend, ask for
predictions of every task, decode each stored brush region with Label Studio's own converter
(``label_studio_sdk.converter.brush.decode_rle``) into a class-index mask (.npy per task), turn
the predictions into annotations, and write the project's JSON export.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter.brush import decode_rle


def main() -> None:
    job = json.loads(sys.argv[1])
    out = Path(job["out"])
    headers = {"Authorization": f"Token {job['token']}"}
    ls = LabelStudio(base_url=job["ls_url"], api_key=job["token"], timeout=300)
    project = ls.projects.create(title="fcnseg pre-annotation", label_config=job["config"])
    files = [
        (f"file{i}", (Path(p).name, Path(p).read_bytes())) for i, p in enumerate(job["images"])
    ]
    response = requests.post(
        f"{job['ls_url']}/api/projects/{project.id}/import",
        headers=headers,
        files=files,
        timeout=300,
    )
    response.raise_for_status()
    tasks = list(ls.tasks.list(project=project.id))
    backend = ls.ml.create(
        project=project.id, url=job["backend_url"], title="fcnseg", **job.get("ml", {})
    )
    started = time.perf_counter()
    ls.actions.create(
        id="retrieve_tasks_predictions",
        project=project.id,
        selected_items={"all": True, "excluded": []},
    )
    predict_s = time.perf_counter() - started
    classes = job["classes"]
    report = {"project": project.id, "backend_state": None, "tasks": [], "predict_s": predict_s}
    report["backend_state"] = ls.ml.get(backend.id).state
    for task in tasks:
        predictions = ls.predictions.list(task=task.id)
        entry = {"id": task.id, "image": task.data["image"], "predictions": len(predictions)}
        if predictions:
            prediction = predictions[0]
            entry["model_version"] = prediction.model_version
            entry["score"] = prediction.score
            mask = None
            for region in prediction.result:
                if region["type"] != "brushlabels":
                    continue
                height, width = region["original_height"], region["original_width"]
                if mask is None:
                    mask = np.full((height, width), 255, np.uint8)
                layer = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3]
                mask[layer > 127] = classes.index(region["value"]["brushlabels"][0])
            entry["regions"] = len(prediction.result)
            if mask is not None:
                path = out / f"task-{task.id}.npy"
                np.save(path, mask)
                entry["mask"] = str(path)
        report["tasks"].append(entry)
    # The labeller accepts the pre-annotations: predictions -> annotations, then export.
    ls.actions.create(
        id="predictions_to_annotations",
        project=project.id,
        selected_items={"all": True, "excluded": []},
    )
    export = requests.get(
        f"{job['ls_url']}/api/projects/{project.id}/export",
        params={"exportType": "JSON"},
        headers=headers,
        timeout=300,
    )
    export.raise_for_status()
    (out / "export.json").write_bytes(export.content)
    report["export"] = str(out / "export.json")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
