"""The real Label Studio for tests/labeling: its own virtual environment (``make
label-studio-venv``: tests/labeling/requirements.txt into .venv-label-studio, or the folder
named by ``FCN_LABEL_STUDIO_VENV``), started on a loopback port with SQLite in a temporary data
folder, a user and a legacy API token created at start, and every call home switched off.

Without that environment the tests skip; with ``FCN_LABEL_STUDIO_REQUIRED=1`` (set by ``make
label-studio-test`` and CI) they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.http.launcher import free_port
from tests.requirements import require_or_skip

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600  # the first start migrates a fresh SQLite database (minutes on 2 cores)
TOKEN = "fcnseg0test0token0000000000000000000001"


@dataclass
class LabelStudio:
    url: str
    token: str
    python: Path
    process: subprocess.Popen
    log: Path
    start_s: float


def label_studio_venv() -> Path:
    """The venv's absolute path (a relative FCN_LABEL_STUDIO_VENV is taken from the repository:
    Label Studio runs with its data folder as the working directory)."""
    path = Path(os.environ.get("FCN_LABEL_STUDIO_VENV") or ".venv-label-studio")
    return path if path.is_absolute() else REPO / path


def _missing(reason: str) -> None:
    require_or_skip(f"Label Studio: {reason}", switch="FCN_LABEL_STUDIO_REQUIRED")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    venv = label_studio_venv()
    binary = venv / "bin" / "label-studio"
    if not binary.exists():
        _missing(f"no Label Studio at {venv} (make label-studio-venv)")
    data = tmp_path_factory.mktemp("label-studio")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_USERNAME": "ci@example.com",
        "LABEL_STUDIO_PASSWORD": "fcnseg-test-password",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        # The ML backend fetches task images with this token (FCN_LABEL_STUDIO_TOKEN).
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # Loopback only: no version check, analytics or error reporting.
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        # Label Studio refuses ML backends (and the webhook it adds for each) on local or
        # private addresses; the service is on 127.0.0.1 here, on a private network in a
        # compose deployment. docs/label-studio.md gives users the same three settings: allow
        # local addresses, keep blocking the ones the service never lives on.
        "ML_BLOCK_LOCAL_IP": "false",
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": "0.0.0.0/8,169.254.0.0/16,224.0.0.0/4,240.0.0.0/4",
    }
    log = data / "label-studio.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"Label Studio exited ({process.returncode}):\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - started > START_TIMEOUT_S:
                pytest.fail(
                    f"Label Studio not up in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(2)
        yield LabelStudio(
            url, TOKEN, venv / "bin" / "python", process, log, time.perf_counter() - started
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
