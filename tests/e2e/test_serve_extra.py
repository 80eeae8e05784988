"""The serving image's contents are enough: a clean venv with only `.[serve]` serves over HTTP.

The package is installed the way docker/serve.Dockerfile installs it: the paths its build stage
COPYs, then a plain (non-editable) `pip install ".[serve]"` into a fresh virtual environment
without system site-packages. pip's cache (and any local index it is configured with) keeps it
fast on a second run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deploy.dockerfiles import parse_dockerfile, pip_installs
from tests.e2e.server import fcn_serve, http

ROOT = Path(__file__).resolve().parents[2]
# Subprocesses of the venv see nothing of this checkout (no PYTHONPATH, no cwd on sys.path).
CLEAN_ENV = {"PYTHONPATH": "", "PYTHONSAFEPATH": "1"}
TORCH_LIKE = ("torch", "torchvision", "segmentation_models_pytorch", "albumentations", "onnx")


def _copy_build_context(dest: Path) -> list[str]:
    """Copy what the serve image's build stage COPYs; return the pip install arguments."""
    instructions = parse_dockerfile(ROOT / "docker" / "serve.Dockerfile")
    build_stage = 0
    for ins in instructions:
        if ins.keyword == "COPY" and ins.stage == build_stage:
            *sources, target = ins.words()
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path,
                        dest / source,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
                    )
                else:
                    shutil.copy2(
                        path, dest / (Path(source).name if target.endswith("/") else target)
                    )
    (install,) = pip_installs(instructions)
    return install


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("serve_extra")
    context = work / "src"
    context.mkdir()
    install = _copy_build_context(context)
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *install],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **CLEAN_ENV},
    )
    if result.returncode != 0:
        if "Could not find a version" in result.stderr or "NewConnectionError" in result.stderr:
            pytest.skip(f"no package index reachable for the serve extra: {result.stderr[-300:]}")
        raise AssertionError(f"pip install {install} failed:\n{result.stderr[-3000:]}")
    return python


def test_serve_only_venv_has_no_torch(serve_venv):
    code = (
        "import importlib.util, json, sys; "
        f"print(json.dumps([m for m in {TORCH_LIKE!r} if importlib.util.find_spec(m)]))"
    )
    clean = {**os.environ, **CLEAN_ENV}
    found = subprocess.run(
        [str(serve_venv), "-c", code], capture_output=True, text=True, check=True, env=clean
    )
    assert json.loads(found.stdout) == []
    # the install is the venv's own copy, not this checkout
    where = subprocess.run(
        [str(serve_venv), "-c", "import service; print(service.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=clean,
    )
    assert Path(where.stdout.strip()).is_relative_to(serve_venv.parent.parent)


def test_serve_only_venv_serves_the_bundled_models_page_sample_and_docs(serve_venv, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (45, 67, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    log = tmp_path / "serve.log"
    with fcn_serve([], log, python=serve_venv, env=CLEAN_ENV, cwd=tmp_path) as server:
        models = server.get_json("/v1/models")["models"]
        assert [m["name"] for m in models] == ["default", "demo"]
        assert models[0]["default"] and "building" in models[0]["classes"]  # the aerial model
        status, headers, body = http(
            "POST",
            server.url + "/v1/segment",
            buffer.getvalue(),
            {"Content-Type": "image/jpeg"},
        )
        assert status == 200, body
        mask = np.asarray(Image.open(io.BytesIO(body)))
        assert mask.shape == (45, 67)
        assert int(mask.max()) < len(models[0]["classes"])
        assert headers["x-model"] == "default"
        status, _, page = http("GET", server.url + "/")
        assert status == 200 and b'<script src="app.js"' in page
        assert http("GET", server.url + "/app.js")[0] == 200
        # the page's sample ships in the wheel and the default model segments it
        status, _, sample = http("GET", server.url + "/samples/dubai-aerial.jpg")
        assert status == 200 and sample.startswith(b"\xff\xd8")
        status, _, body = http(
            "POST", server.url + "/v1/segment", sample, {"Content-Type": "image/jpeg"}
        )
        assert status == 200 and np.asarray(Image.open(io.BytesIO(body))).shape == (512, 512)
        # /docs and /redoc work offline: every script and stylesheet they load is served here
        for docs in ("/docs", "/redoc"):
            status, _, html = http("GET", server.url + docs)
            assert status == 200 and b"https://" not in html, docs
            for url in re.findall(rb'(?:src|href)="([^"]+)"', html):
                assert http("GET", server.url + url.decode())[0] == 200, (docs, url)
        # the image's HEALTHCHECK command, run as written, passes against the live service
        port = server.url.rsplit(":", 1)[1]
        assert _healthcheck(serve_venv, port).returncode == 0
    assert _healthcheck(serve_venv, port).returncode != 0  # and fails once it is gone


def _healthcheck(python: Path, port: str) -> subprocess.CompletedProcess:
    instructions = parse_dockerfile(ROOT / "docker" / "serve.Dockerfile")
    (check,) = [i for i in instructions if i.keyword == "HEALTHCHECK"]
    command = json.loads(check.args.split(" CMD ", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, **CLEAN_ENV, "FCN_PORT": port}
    return subprocess.run([str(python), *command[1:]], env=env, capture_output=True, timeout=30)
