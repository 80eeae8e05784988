"""Pre-annotation with the real Label Studio (its own venv; see conftest.py) and ``fcn serve``.

Label Studio gets a BrushLabels project with the default model's classes, real aerial images
uploaded as tasks, and the service as its ML backend; it requests the predictions itself
(fetching each image back from Label Studio with its token), stores them, and the client reads
them through its API and decodes them with Label Studio's own converter. Each stored mask must
equal the ``/v1/segment`` mask, pixel for pixel. Then the predictions become annotations, the
project is exported as JSON, and ``fcn data import-label-studio`` turns the export back into
``images/`` + ``masks/``: the same masks again, and the images byte for byte.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine import read_model_metadata
from service.http.launcher import fcn_serve, http
from service.models import bundled_model_path
from tests.requirements import required, shared_data_root

pytestmark = pytest.mark.label_studio

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "service" / "http" / "web" / "samples" / "dubai-aerial.jpg"
CLIENT = Path(__file__).with_name("ls_client.py")


def _images(tmp: Path) -> list[Path]:
    """Three real validation photos of the aerial set (different sizes) and the packaged sample."""
    val = shared_data_root() / "dubai_aerial" / "val" / "images"
    if not val.is_dir():  # the packaged sample alone still makes the round trip
        if required("FCN_LABEL_STUDIO_REQUIRED"):
            pytest.fail(f"{val} is not available (real data lives in ../shared/data)")
    chosen = sorted(val.glob("*.jpg"))[::6][:3]
    folder = tmp / "upload"
    folder.mkdir()
    out = []
    for path in [*chosen, SAMPLE]:
        out.append(Path(shutil.copy(path, folder / path.name)))
    return out


def _v1_mask(url: str, data: bytes) -> np.ndarray:
    status, _, body = http("POST", url + "/v1/segment", data, {"Content-Type": "image/jpeg"}, 120)
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as png:
        return np.asarray(png)


def test_round_trip_through_label_studio(label_studio, tmp_path: Path) -> None:
    classes = list(read_model_metadata(bundled_model_path("default")).classes)
    config = (
        '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
        + "".join(f'<Label value="{name}"/>' for name in classes)
        + "</BrushLabels></View>"
    )
    images = _images(tmp_path)
    env = {
        "PYTHONPATH": str(REPO),
        "FCN_LABEL_STUDIO_URL": label_studio.url,
        "FCN_LABEL_STUDIO_TOKEN": label_studio.token,
    }
    out = tmp_path / "client"
    out.mkdir()
    with fcn_serve(["--model", "default"], tmp_path / "serve.log", env=env, cwd=REPO) as server:
        job = {
            "ls_url": label_studio.url,
            "token": label_studio.token,
            "backend_url": server.url + "/label-studio",
            "config": config,
            "classes": classes,
            "images": [str(p) for p in images],
            "out": str(out),
        }
        started = time.perf_counter()
        run = subprocess.run(
            [str(label_studio.python), str(CLIENT), json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        client_s = time.perf_counter() - started
        assert run.returncode == 0, (
            run.stderr[-4000:] + "\n--- service log:\n" + server.output()[-3000:]
        )
        report = json.loads(run.stdout.strip().splitlines()[-1])
        version = server.get_json("/v1/models/default")["version"]
        expected = {p.name: _v1_mask(server.url, p.read_bytes()) for p in images}

    assert report["backend_state"] == "CO", report  # connected
    assert len(report["tasks"]) == len(images)
    pixels = 0
    for task in report["tasks"]:
        assert task["predictions"] == 1, task
        assert task["model_version"] == version
        assert 0.0 < task["score"] <= 1.0
        name = next(n for n in expected if task["image"].endswith("-" + n))
        stored = np.load(task["mask"])
        np.testing.assert_array_equal(stored, expected[name])
        pixels += stored.size

    dataset = tmp_path / "dataset"
    command = [
        sys.executable, "-m", "fcn", "data", "import-label-studio", report["export"],
        "--out", str(dataset), "--model", str(bundled_model_path("default")),
        "--label-studio-url", label_studio.url, "--token", label_studio.token,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["classes"] == classes
    for path in images:
        assert (dataset / "images" / path.name).read_bytes() == path.read_bytes()
        with Image.open(dataset / "masks" / (path.stem + ".png")) as png:
            np.testing.assert_array_equal(np.asarray(png), expected[path.name])
    print(
        f"\nLabel Studio round trip: {len(images)} images, {pixels} pixels compared; Label Studio "
        f"start {label_studio.start_s:.0f} s, client {client_s:.0f} s (predictions "
        f"{report['predict_s']:.1f} s)"
    )
