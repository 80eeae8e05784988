"""The labelling loop against the real Label Studio (its own venv; see conftest.py).

A BrushLabels project of the Dubai validation images (the default model never trained on them)
with the service as its ML backend and a webhook for new annotations; a scripted annotator
(ls_annotator.py, through Label Studio's API) submits each image's ground-truth mask as brush
labels; the Nth annotation's webhook starts a fine-tune of the served default; the candidate
must pass the gate and go live while a client sends requests throughout, none failing; Label
Studio's next prediction carries the new ``model_version``. Prints the figures: N, the time
from the last annotation to the new version live, held-out mIoU before and after, and request
latency during the run against idle.
"""

from __future__ import annotations

import io
import json
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine import read_model_metadata
from service.http.launcher import fcn_serve, http
from service.models import bundled_model_path
from tests.brush_regions import mask_regions
from tests.requirements import required, shared_data_root

pytestmark = [pytest.mark.label_studio, pytest.mark.long, pytest.mark.timeout(3000)]

REPO = Path(__file__).resolve().parents[2]
ANNOTATOR = Path(__file__).with_name("ls_annotator.py")
TRAIN_MINUTES = 3


def _run(label_studio, job: dict, tmp: Path) -> dict:
    path = tmp / f"job-{job['step']}.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [str(label_studio.python), str(ANNOTATOR), str(path)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class Client(threading.Thread):
    """Sends ``/v1/segment`` requests one after another; records (time, seconds, status, version)."""

    def __init__(self, url: str, image: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.image = url, image
        self.records: list[tuple[float, float, int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.time()
            status, headers, _ = http(
                "POST", self.url + "/v1/segment", self.image, {"Content-Type": "image/jpeg"}, 120
            )
            self.records.append(
                (start, time.time() - start, status, headers.get("x-model-version", ""))
            )


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": 1000 * pick(0.5), "p99_ms": 1000 * pick(0.99)}


def test_annotations_fine_tune_the_served_model_live(label_studio, tmp_path: Path) -> None:
    val = shared_data_root() / "dubai_aerial" / "val"
    if not (val / "images").is_dir():
        if required("FCN_LABEL_STUDIO_REQUIRED"):
            pytest.fail(f"{val} is not available (real data lives in ../shared/data)")
        pytest.skip(f"{val} is not available")
    classes = list(read_model_metadata(bundled_model_path("default")).classes)
    config = (
        '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
        + "".join(f'<Label value="{name}"/>' for name in classes)
        + "</BrushLabels></View>"
    )
    images = sorted((val / "images").glob("*.jpg"))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bundled_model_path("default"), models / "default.onnx")
    env = {
        "PYTHONPATH": str(REPO),
        "FCN_MODELS_DIR": str(models),
        "FCN_LABEL_STUDIO_URL": label_studio.url,
        "FCN_LABEL_STUDIO_TOKEN": label_studio.token,
        "FCN_LABEL_STUDIO_TRAIN": "1",
        "FCN_TRAIN_AFTER_ANNOTATIONS": str(len(images)),
        "FCN_TRAIN_MINUTES": str(TRAIN_MINUTES),
        "FCN_TRAIN_HELDOUT_SHARE": "0.25",
    }
    with Image.open(images[0]) as opened:
        buffer = io.BytesIO()
        opened.convert("RGB").crop((0, 0, 256, 256)).save(buffer, format="JPEG")
    with fcn_serve(["--concurrency", "1"], tmp_path / "serve.log", env=env, cwd=REPO) as server:
        before = server.get_json("/v1/models/default")["version"]
        base = {"ls_url": label_studio.url, "token": label_studio.token}
        setup = _run(
            label_studio,
            {**base, "step": "setup", "config": config, "images": [str(p) for p in images],
             "backend_url": server.url + "/label-studio"},
            tmp_path,
        )  # fmt: skip
        client = Client(server.url, buffer.getvalue())
        client.start()
        time.sleep(20)  # idle latency
        idle_until = time.time()
        annotations = []
        for path in images:
            mask = np.asarray(Image.open(val / "masks" / (path.stem + ".png")))
            annotations.append([setup["tasks"][path.name], mask_regions(mask, classes)])
        annotated = _run(
            label_studio, {**base, "step": "annotate", "annotations": annotations}, tmp_path
        )
        deadline = time.time() + 40 * 60
        live_at, run = None, None
        while time.time() < deadline:
            state = server.get_json("/v1/training")
            if state["runs"] and state["runs"][-1]["status"] != "running":
                run = state["runs"][-1]
                break
            time.sleep(2)
        assert run is not None, server.output()[-4000:]
        live = server.get_json("/v1/models/default")["version"]
        live_at = time.time()
        for start, _, _, version in client.records:
            if version == live and version != before:
                live_at = min(live_at, start)
        time.sleep(5)
        client.stop.set()
        client.join(130)
        predicted = _run(
            label_studio,
            {**base, "step": "predict", "project": setup["project"], "task": annotations[0][0]},
            tmp_path,
        )
    records = client.records
    failed = [r for r in records if r[2] != 200]
    idle = [r[1] for r in records if r[0] < idle_until]
    during = [r[1] for r in records if annotated["last_annotation_at"] <= r[0] < live_at]
    figures = {
        "annotated_tasks": annotated["annotated"],
        "run": run,
        "seconds_from_last_annotation_to_live": round(live_at - annotated["last_annotation_at"], 1),
        "requests": len(records),
        "failed_requests": len(failed),
        "latency_idle": _percentiles(idle),
        "latency_during_training": _percentiles(during),
        "label_studio_model_versions": predicted["model_versions"],
    }
    print("\nlabelling loop against the real Label Studio:", json.dumps(figures, indent=1))
    assert run["status"] == "promoted", run
    assert run["heldout_miou"] > run["parent_heldout_miou"]
    assert live == run["candidate_version"] != before
    assert not failed, failed[:5]
    assert live in predicted["model_versions"]
    assert statistics.mean(idle) > 0
