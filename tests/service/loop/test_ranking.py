"""``GET /label-studio/rank``: a project's unlabelled tasks scored by the served model, least sure
first, with a fake Label Studio on 127.0.0.1."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from service.http.app import create_app
from service.http.settings import Settings

KEY = "rank-key"
AUTH = {"X-API-Key": KEY}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    if seed % 2:
        pixels[:] = pixels.mean(axis=(0, 1)).astype(np.uint8)  # flat: the model is surer
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_unlabelled_tasks_come_least_sure_first(conv_model, label_studio) -> None:
    tasks = []
    for task_id in range(1, 6):
        url = f"/data/upload/1/{task_id}.png"
        label_studio.files[url] = _png(task_id)
        tasks.append({"id": task_id, "data": {"image": url}, "annotations": []})
    tasks[0]["annotations"] = [{"id": 9, "result": [{"type": "brushlabels"}], "updated_at": "t"}]
    label_studio.export = tasks
    settings = Settings(models=[str(conv_model)], api_key=KEY, label_studio_url=label_studio.url)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/label-studio/rank?project=1", headers=AUTH)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ranked = body["tasks"]
        assert body["unlabelled"] == 4 and {t["id"] for t in ranked} == {2, 3, 4, 5}
        scores = [t["score"] for t in ranked]
        assert scores == sorted(scores) and all(0.0 < s <= 1.0 for s in scores)
        assert body["model_version"]
        assert ("/api/projects/1/export?exportType=JSON&download_all_tasks=true", None) in (
            label_studio.requests
        )
        assert client.get("/label-studio/rank?project=1").status_code == 401


def test_rank_answers_502_when_label_studio_is_unreachable(conv_model) -> None:
    settings = Settings(models=[str(conv_model)], label_studio_url="http://127.0.0.1:9")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/label-studio/rank?project=1")
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "label_studio_unreachable"
