"""The labelling loop in the service: webhooks, debounce, the gate, promotion, rollback and the
failure paths, with a fake Label Studio on 127.0.0.1 and real ONNX Runtime models.

The training pipeline is replaced by :class:`FakePipeline` (the candidate is a given model file
with given held-out scores) except where a real subprocess is killed; the real pipeline's steps
are tested in test_pipeline.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.http.settings import Settings
from service.loop.pipeline import Pipeline
from tests.service.conftest import make_onnx_model
from tests.service.http.conftest import image_bytes
from tests.service.loop.conftest import FakePipeline, annotated_export

KEY = "loop-key"
AUTH = {"X-API-Key": KEY}
EVENT = {"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"id": 7}}


@pytest.fixture
def models(tmp_path, conv_model):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(conv_model, folder / "default.onnx")
    return folder


@pytest.fixture
def candidate(tmp_path):
    return make_onnx_model(
        tmp_path / "candidate.onnx", kind="strided", num_classes=4, size_multiple=4
    )


def _client(models, url, **settings):
    values = dict(
        models_dir=models,
        api_key=KEY,
        label_studio_train=True,
        label_studio_url=url,
        train_after_annotations=3,
    )
    return TestClient(create_app(Settings(**{**values, **settings})))


def _webhook(client, event=EVENT) -> dict:
    response = client.post("/label-studio/webhook", json=event, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["training"]


def _wait_idle(client, runs: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/v1/training", headers=AUTH).json()
        if not state["training"] and len(state["runs"]) >= runs:
            return state
        time.sleep(0.05)
    raise AssertionError(f"no {runs} finished runs in {timeout} s: {state}")


def _segment(client) -> tuple[str, bytes]:
    files = {"image": ("x.png", image_bytes(31, 17))}
    response = client.post("/v1/segment", files=files, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"], response.content


def test_promotes_after_n_annotations_and_rolls_back_byte_identical(
    models, candidate, label_studio
) -> None:
    label_studio.export = annotated_export(10)
    fake = FakePipeline(candidate, miou=0.60, parent_miou=0.50)
    with _client(models, label_studio.url, label_studio_token="tok") as client:
        client.app.state.service.training.make_pipeline = fake
        old_version, old_mask = _segment(client)
        assert _webhook(client)["status"] == "counted"
        assert _webhook(client)["pending_annotations"] == 1  # the same annotation again
        assert _webhook(client, {**EVENT, "annotation": {"id": 8}})["status"] == "counted"
        assert _webhook(client, {**EVENT, "annotation": {"id": 9}})["status"] == "started"
        run = _wait_idle(client, 1)["runs"][0]
        assert run["status"] == "promoted", run
        new_version, new_mask = _segment(client)
        assert new_version == run["candidate_version"] != old_version
        assert new_mask != old_mask
        # Lineage: parent, held-out metrics, trained task ids disjoint from the held-out ones.
        listed = client.get("/v1/models/default/versions", headers=AUTH).json()
        assert listed["live"] == new_version
        records = {r["version"]: r for r in listed["versions"]}
        record = records[new_version]
        assert record["parent"] == old_version and record["promoted"] is True
        assert record["metrics"]["heldout_miou"] == 0.60
        trained = set(record["trained_on"]["task_ids"])
        assert trained and not trained & set(record["heldout_task_ids"])
        assert len(trained) + len(record["heldout_task_ids"]) == 10
        assert record["cpu"]
        # The token went to Label Studio's export API.
        assert ("/api/projects/1/export?exportType=JSON", "Token tok") in label_studio.requests
        # Rollback: the previous version, masks byte-identical to before.
        assert (
            client.post("/v1/models/default/rollback", json={"version": old_version}).status_code
            == 401
        )
        answer = client.post(
            "/v1/models/default/rollback", json={"version": old_version}, headers=AUTH
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == old_version
        assert _segment(client) == (old_version, old_mask)
        missing = client.post(
            "/v1/models/default/rollback", json={"version": "abc123"}, headers=AUTH
        )
        assert missing.status_code == 404 and "abc123" in missing.text


def test_a_candidate_failing_the_gate_is_refused_and_the_old_version_serves(
    models, candidate, label_studio
) -> None:
    label_studio.export = annotated_export(10)
    fake = FakePipeline(candidate, miou=0.503, parent_miou=0.50)  # under the 0.005 margin
    with _client(models, label_studio.url) as client:
        client.app.state.service.training.make_pipeline = fake
        before = _segment(client)
        _webhook(client, {"action": "START_TRAINING", "project": {"id": 1}})
        run = _wait_idle(client, 1)["runs"][0]
        assert run["status"] == "refused" and "0.5030 vs 0.5000 + 0.005" in run["reason"]
        assert _segment(client) == before
        records = client.get("/v1/models/default/versions", headers=AUTH).json()["versions"]
        refused = [r for r in records if r["version"] == run["candidate_version"]]
        assert refused and refused[0]["promoted"] is False and not refused[0]["live"]


def test_label_studio_unreachable_fails_the_run_and_the_service_serves(models) -> None:
    with _client(models, "http://127.0.0.1:9") as client:  # discard port: nothing listens
        before = _segment(client)
        _webhook(client, {"action": "START_TRAINING", "project": {"id": 1}})
        run = _wait_idle(client, 1)["runs"][0]
        assert run["status"] == "failed" and "cannot reach Label Studio" in run["reason"]
        assert _segment(client) == before


def test_webhooks_during_a_run_are_merged_into_one_next_run(
    models, candidate, label_studio
) -> None:
    label_studio.export = annotated_export(10)
    gate = threading.Event()
    fake = FakePipeline(candidate, miou=0.4, parent_miou=0.5, gate=gate)
    with _client(models, label_studio.url) as client:
        client.app.state.service.training.make_pipeline = fake
        assert _webhook(client, {"action": "START_TRAINING", "project": 1})["status"] == "started"
        answers = [_webhook(client, {**EVENT, "annotation": {"id": i}})["status"] for i in range(7)]
        assert answers == ["queued"] * 7
        gate.set()
        state = _wait_idle(client, 2)
        time.sleep(0.3)  # a third run would have started by now
        state = _wait_idle(client, 2)
        assert len(state["runs"]) == 2 and len(fake.jobs) == 2 and fake.max_active == 1
        assert state["pending_annotations"] == 0


def test_two_webhooks_at_once_start_one_run(models, candidate, label_studio) -> None:
    label_studio.export = annotated_export(10)
    gate = threading.Event()
    fake = FakePipeline(candidate, miou=0.4, parent_miou=0.5, gate=gate)
    with _client(models, label_studio.url) as client:
        client.app.state.service.training.make_pipeline = fake
        event = {"action": "START_TRAINING", "project": {"id": 1}}
        answers: list[str] = []
        threads = [
            threading.Thread(target=lambda: answers.append(_webhook(client, event)["status"]))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == ["queued", "started"]
        gate.set()
        # The second START was merged: it runs once after the first run, never beside it.
        state = _wait_idle(client, 2)
        assert len(state["runs"]) == 2 and len(fake.jobs) == 2 and fake.max_active == 1


def test_no_held_out_task_skips_the_run(models, candidate, label_studio) -> None:
    label_studio.export = annotated_export(10)[:1]
    with _client(models, label_studio.url, train_heldout_share=0.01) as client:
        client.app.state.service.training.make_pipeline = FakePipeline(candidate, 1.0, 0.0)
        _webhook(client, {"action": "START_TRAINING", "project": {"id": 1}})
        run = _wait_idle(client, 1)["runs"][0]
        assert run["status"] == "skipped" and "at least one of each" in run["reason"]


def _sleeper(argv, env, log):
    import subprocess

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_killed_training_process_fails_the_run_and_the_next_starts_clean(
    models, candidate, label_studio
) -> None:
    label_studio.export = annotated_export(10)
    pipeline = Pipeline(launcher=_sleeper)
    with _client(models, label_studio.url) as client:
        loop = client.app.state.service.training
        loop.make_pipeline = lambda: pipeline
        before = _segment(client)
        _webhook(client, {"action": "START_TRAINING", "project": {"id": 1}})
        deadline = time.monotonic() + 30
        while pipeline.process is None and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = next((models / ".loop").iterdir())
        os.kill(pipeline.process.pid, signal.SIGKILL)  # as the OOM killer would
        run = _wait_idle(client, 1)["runs"][0]
        assert run["status"] == "failed" and "killed by signal 9" in run["reason"]
        assert _segment(client) == before
        loop.make_pipeline = FakePipeline(candidate, miou=0.9, parent_miou=0.5)
        _webhook(client, {"action": "START_TRAINING", "project": {"id": 1}})
        run = _wait_idle(client, 2)["runs"][1]
        assert run["status"] == "promoted"
        assert not leftover.exists()


def test_the_loop_needs_a_models_folder_and_label_studio() -> None:
    from service.http.training import TrainingSetupError

    with pytest.raises(TrainingSetupError, match="FCN_MODELS_DIR and FCN_LABEL_STUDIO_URL"):
        create_app(Settings(label_studio_train=True))


def test_the_loop_refuses_to_start_in_an_install_without_torch(python_without) -> None:
    done = python_without(
        """
        from service.http.app import create_app
        from service.http.settings import Settings
        from service.http.training import TrainingSetupError
        try:
            create_app(Settings(label_studio_train=True))
        except TrainingSetupError as exc:
            print("REFUSED", exc)
        """,
        blocked=("torch",),
    )
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and "lacks torch" in done.stdout, done.stdout
    assert "fcnseg[train]" in done.stdout
