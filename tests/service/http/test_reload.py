"""``POST /v1/models/reload`` in process: what changes, what fails and keeps serving, the report.

Under load, with SIGHUP, and memory over many reloads: tests/e2e/test_reload.py.
"""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.http.settings import Settings
from tests.service.conftest import make_onnx_model
from tests.service.http.conftest import image_bytes

KEY = "reload-key"
AUTH = {"X-API-Key": KEY}


@pytest.fixture
def folder(tmp_path, conv_model, identity_model):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(conv_model, models / "a.onnx")
    shutil.copy(identity_model, models / "b.onnx")
    return models


@pytest.fixture
def client(folder):
    with TestClient(create_app(Settings(models_dir=folder, api_key=KEY))) as client:
        yield client


def reload(client, status: int = 200) -> dict[str, dict]:
    response = client.post("/v1/models/reload", headers=AUTH)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is (status == 200)
    return {entry["name"]: entry for entry in body["models"]}


def served_version(client, model: str) -> str:
    files = {"image": ("x.png", image_bytes(9, 7))}
    response = client.post(f"/v1/segment?model={model}", files=files, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def versions(client) -> dict[str, str]:
    listed = client.get("/v1/models", headers=AUTH).json()["models"]
    return {m["name"]: m["version"] for m in listed}


def test_nothing_changed_is_unchanged(client) -> None:
    before = versions(client)
    report = reload(client)
    assert {n: r["status"] for n, r in report.items()} == {"a": "unchanged", "b": "unchanged"}
    assert {n: r["version"] for n, r in report.items()} == before == versions(client)


def test_a_changed_file_is_reloaded_and_named_everywhere(client, folder, tmp_path) -> None:
    old = versions(client)["a"]
    make_onnx_model(tmp_path / "a2.onnx", kind="conv", metadata={"arch": "test-v2"})
    shutil.move(tmp_path / "a2.onnx", folder / "a.onnx")
    report = reload(client)
    new = report["a"]["version"]
    assert report["a"]["status"] == "reloaded" and report["a"]["previous_version"] == old != new
    assert report["b"]["status"] == "unchanged"
    assert served_version(client, "a") == new
    summary = client.post(
        "/v1/segment?model=a&format=json",
        files={"image": ("x.png", image_bytes(5, 5))},
        headers=AUTH,
    ).json()
    assert summary["model"] == "a" and summary["model_version"] == new
    v2 = client.get("/v2/models/a", headers=AUTH)
    assert v2.json()["versions"] == [new] and v2.headers["x-model-version"] == new
    metrics = client.get("/metrics").text
    assert 'fcn_model_reloads_total{model="a",outcome="reloaded"} 1.0' in metrics


def test_a_broken_file_fails_and_the_old_version_keeps_serving(client, folder) -> None:
    old = versions(client)["a"]
    (folder / "a.onnx").write_bytes(b"not an onnx file")
    report = reload(client, status=422)
    assert report["a"]["status"] == "failed" and report["a"]["version"] == old
    assert report["a"]["error"]
    assert served_version(client, "a") == old
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert 'fcn_model_reloads_total{model="a",outcome="failed"} 1.0' in metrics


def test_a_model_that_fails_its_warm_up_is_not_swapped_in(client, folder) -> None:
    # Loads and its metadata parses, but the graph needs sides that are multiples of 4 while
    # the metadata says any size: the warm-up run (33 x 33) gets logits of the wrong shape.
    old = versions(client)["b"]
    make_onnx_model(folder / "b.onnx", kind="strided", num_classes=3, size_multiple=1)
    report = reload(client, status=422)
    assert report["b"]["status"] == "failed" and "size_multiple" in report["b"]["error"]
    assert report["a"]["status"] == "unchanged"
    assert served_version(client, "b") == old


def test_a_model_whose_metadata_is_wrong_is_not_swapped_in(client, folder) -> None:
    old = versions(client)["a"]
    make_onnx_model(folder / "a.onnx", kind="conv", num_classes=4, drop_keys=("classes",))
    report = reload(client, status=422)
    assert report["a"]["status"] == "failed" and "classes" in report["a"]["error"]
    assert served_version(client, "a") == old


def test_new_files_are_added_and_gone_ones_removed(client, folder, conv_model) -> None:
    shutil.copy(conv_model, folder / "c.onnx")
    (folder / "b.onnx").unlink()
    report = reload(client)
    assert report["c"]["status"] == "added" and report["b"]["status"] == "removed"
    assert report["b"]["version"] is None
    assert set(versions(client)) == {"a", "c"}
    files = {"image": ("x.png", image_bytes(4, 4))}
    assert client.post("/v1/segment?model=b", files=files, headers=AUTH).status_code == 404


def test_an_emptied_folder_keeps_its_models_not_the_demo_model(tmp_path, conv_model) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(conv_model, folder / "only.onnx")
    with TestClient(create_app(Settings(models_dir=folder))) as client:
        (folder / "only.onnx").unlink()
        response = client.post("/v1/models/reload")
        assert response.status_code == 409, response.text
        assert "no *.onnx files" in response.json()["error"]["message"]
        assert client.get("/v2/models/only/ready").json() == {"name": "only", "ready": True}
        assert client.get("/v2/models/default/ready").status_code == 404


def test_the_configured_default_is_kept_when_its_file_goes(tmp_path, conv_model) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(conv_model, folder / "main.onnx")
    shutil.copy(conv_model, folder / "other.onnx")
    with TestClient(create_app(Settings(models_dir=folder, default_model="main"))) as client:
        (folder / "main.onnx").unlink()
        response = client.post("/v1/models/reload")
        assert response.status_code == 422, response.text
        entry = {e["name"]: e for e in response.json()["models"]}["main"]
        assert entry["status"] == "failed" and "configured default" in entry["error"]
        assert client.get("/v2/models/main/ready").status_code == 200


def test_an_unresolvable_model_set_changes_nothing(client, folder) -> None:
    before = versions(client)
    shutil.rmtree(folder)
    response = client.post("/v1/models/reload", headers=AUTH)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "reload_failed"
    assert versions(client) == before


def test_reload_needs_the_api_key(client) -> None:
    assert client.post("/v1/models/reload").status_code == 401
