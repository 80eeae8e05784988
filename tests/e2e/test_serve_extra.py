"""The serve-only install: `make run` from a fresh clone, and the serving image's contents.

1. `make run` in a fresh copy of the checkout's tracked files, timed to a ready server
   (``/readyz``) as on a new machine: an **empty pip cache** and **no pip configuration**
   (no local mirror, wheel folder or extra index a CI runner may have), so every wheel comes
   from PyPI over the network and the figure holds for a user, not only for a warm runner.
   Skips when PyPI does not answer.
2. The package installed the way docker/serve.Dockerfile installs it: the paths its build stage
   COPYs, then a plain (non-editable) `pip install ".[serve]"` into a fresh virtual environment
   without system site-packages. It shares the module's pip cache, so it reuses the wheels the
   first part downloaded.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import venv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import Server, fcn_serve, free_port, http, wait_ready
from tests.deploy.dockerfiles import parse_dockerfile, pip_installs

ROOT = Path(__file__).resolve().parents[2]
# Subprocesses of the venv see nothing of this checkout (no PYTHONPATH, no cwd on sys.path).
CLEAN_ENV = {"PYTHONPATH": "", "PYTHONSAFEPATH": "1"}
TORCH_LIKE = ("torch", "torchvision", "segmentation_models_pytorch", "albumentations", "onnx")
MAKE_RUN_READY_S = 90  # a fresh clone to a ready server, downloads included
# What could make pip skip the network on a CI runner: a mirror, a wheel folder, an active venv.
LOCAL_PIP_SOURCES = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CONSTRAINT",
    "VIRTUAL_ENV",
)
NO_INDEX = ("Could not find a version", "NewConnectionError", "No matching distribution")


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory) -> Path:
    """An empty pip cache for this module: the first install downloads everything."""
    return tmp_path_factory.mktemp("pip_cache")


@dataclass
class MakeRun:
    clone: Path
    server: Server
    seconds: float  # `make run` started -> /readyz answered 200
    phases: dict[str, float]  # seconds from the start at which each step had finished

    def report(self) -> str:
        steps = ", ".join(f"{name} by {at:.1f} s" for name, at in self.phases.items())
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        return f"{self.seconds:.1f} s to ready ({steps}; load average {load})"


def _phases(clone: Path, started: float) -> dict[str, float]:
    """When each step of `make run` had finished, from the files it leaves behind."""
    marks = {
        "venv": clone / ".venv" / "bin" / "pip",
        "pip install": clone / ".venv" / ".installed-serve",
    }
    return {name: path.stat().st_mtime - started for name, path in marks.items() if path.exists()}


def _fresh_clone(dest: Path) -> Path:
    """The checkout's tracked files (as `git clone` would give, uncommitted edits included)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so no fresh clone to copy: {listed.stderr[-200:]!r}")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def make_run(tmp_path_factory, pip_cache):
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    clone = _fresh_clone(tmp_path_factory.mktemp("make_run") / "fcnseg")
    port = free_port()
    log = clone.parent / "make_run.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in LOCAL_PIP_SOURCES},
        **CLEAN_ENV,
        "PIP_CACHE_DIR": str(pip_cache),
        "PIP_CONFIG_FILE": os.devnull,  # pip reads no config file: PyPI only
    }
    started, started_wall = time.monotonic(), time.time()
    with open(log, "wb") as sink:
        # its own process group: make, pip and `fcn serve` are stopped together, as Ctrl-C does
        process = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=clone,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        try:
            wait_ready(server, timeout=600)
        except RuntimeError as exc:
            if any(marker in server.output() for marker in NO_INDEX):
                pytest.skip(f"no package index reachable for `make run`: {server.output()[-300:]}")
            raise AssertionError(f"`make run` failed:\n{exc}") from exc
        seconds = time.monotonic() - started
        yield MakeRun(clone, server, seconds, _phases(clone, started_wall))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def test_make_run_serves_from_a_fresh_clone_within_90_s(make_run):
    print(f"`make run` from a fresh clone: {make_run.report()}")
    assert make_run.seconds <= MAKE_RUN_READY_S, (
        f"`make run` from a fresh clone, empty pip cache, PyPI only: {make_run.report()}; "
        f"limit {MAKE_RUN_READY_S} s\n{make_run.server.output()[-2000:]}"
    )
    venv_python = make_run.clone / ".venv" / "bin" / "python"
    code = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {TORCH_LIKE!r} if importlib.util.find_spec(m)]))"
    )
    found = subprocess.run(
        [str(venv_python), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **CLEAN_ENV},
    )
    assert json.loads(found.stdout) == []
    # the curl line it prints works: its sample image (the aerial photo the page ships)
    output = make_run.server.output()
    sample = output.split("curl -F image=@", 1)[1].split(" ", 1)[0]
    with open(make_run.clone / sample, "rb") as image:
        status, headers, body = http(
            "POST",
            make_run.server.url + "/v1/segment",
            image.read(),
            {"Content-Type": "image/jpeg"},
        )
    assert status == 200, body
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert mask.shape == (512, 512) and len(np.unique(mask)) > 1  # land cover found, not one class


def test_the_full_install_counts_as_the_serve_install(make_run):
    """`make test` (the full install) leaves nothing for `make run` to install; TORCH_INDEX
    reaches pip as an extra index."""

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", *args], cwd=make_run.clone, capture_output=True, text=True, check=False
        )

    assert make("-q", "install-serve").returncode == 0  # `make run` installed it just now
    (make_run.clone / "pyproject.toml").touch()  # a changed pyproject: both installs are stale
    assert make("-q", "install-serve").returncode == 1
    index = "https://download.pytorch.org/whl/cpu"
    dry = make("-n", "install", f"TORCH_INDEX={index}").stdout
    assert f"--extra-index-url {index} -e '.[all]'" in dry
    assert "--extra-index-url" not in make("-n", "install").stdout  # default: PyPI alone
    # the full install's recipe, its pip commands replaced by `true`, leaves both stamps fresh
    done = make("install", "PIP_INSTALL=true")
    assert done.returncode == 0, done.stderr
    assert make("-q", "install-serve").returncode == 0


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
def serve_venv(tmp_path_factory, pip_cache) -> Path:
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
        env={**os.environ, **CLEAN_ENV, "PIP_CACHE_DIR": str(pip_cache)},
    )
    if result.returncode != 0:
        if any(marker in result.stderr for marker in NO_INDEX):
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
