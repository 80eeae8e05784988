"""The compose deployment on a real Docker engine: images built, containers started.

``docker/e2e.sh build`` starts a private dockerd when none answers, prepares the stand-in base
images and builds both images (cached between runs). Where no engine can start (not root, no
apt-get) the tests skip with the script's reason; with ``FCN_COMPOSE_REQUIRED=1`` (set by
``make compose-test`` and CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.requirements import require_or_skip, required

# The make target's switch (FCN_REQUIRE_ALL=1 requires compose too).
REQUIRED = "FCN_COMPOSE_REQUIRED"

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "e2e.sh"
CANNOT = 77  # docker/e2e.sh: no engine can run on this machine
PROJECT = "fcnseg-e2e"  # not the default `fcnseg`: a user's own stack is left alone
# Host ports away from the defaults (8000-8009, 8080), checked free before the stack starts.
API_PORTS = range(38100, 38110)
LB_PORT = 38180
BUILD_TIMEOUT_S = 1500


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Stack:
    """``docker`` and ``docker compose`` against the private engine, for one project."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.project = PROJECT
        self.start_to_ready_s = float("nan")
        self.compose_bin = env["FCN_COMPOSE"]

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout

    def succeeds(self, container: str, *command: str) -> bool:
        """Whether ``command`` exits 0 inside ``container``."""
        result = subprocess.run(
            ["docker", "exec", container, *command], env=self.env, capture_output=True, timeout=60
        )
        return result.returncode == 0

    def compose(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [self.compose_bin, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if result.returncode:
            logs = subprocess.run(
                [self.compose_bin, "-p", PROJECT, "logs", "--tail", "40"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            ).stdout
            raise AssertionError(
                f"compose {' '.join(args)} failed: {result.stderr[-3000:]}\n{logs[-4000:]}"
            )
        return result.stdout

    def containers(self, service: str) -> list[dict]:
        """``docker inspect`` of the service's running containers."""
        ids = self.compose("ps", "-q", service).split()
        return json.loads(self.docker("inspect", *ids)) if ids else []

    def api_url(self, replica: int = 1) -> str:
        port = self.compose("port", "--index", str(replica), "api", "8000").strip()
        return f"http://127.0.0.1:{port.rsplit(':', 1)[1]}"

    def wait_healthy(self, service: str, count: int, timeout: float = 60) -> float:
        """Seconds until ``count`` containers of ``service`` report healthy."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            states = [c["State"].get("Health", {}).get("Status") for c in self.containers(service)]
            if states.count("healthy") >= count:
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"{service}: not {count} healthy within {timeout} s: {states}")


def _build() -> dict[str, str]:
    """Run docker/e2e.sh build; the environment that reaches its engine, or skip/fail."""
    try:
        result = subprocess.run(
            ["bash", str(SCRIPT), "build"], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        require_or_skip(f"no bash to run docker/e2e.sh: {exc}", switch=REQUIRED)
    if result.returncode == CANNOT and not required(REQUIRED):
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        require_or_skip(reason, switch=REQUIRED)
    if result.returncode:
        pytest.fail(f"docker/e2e.sh build failed ({result.returncode}):\n{result.stderr[-6000:]}")
    print(result.stderr[-3000:])  # the build's timings, shown with -s or on failure
    env = dict(os.environ)
    for line in subprocess.run(
        ["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Both images built and the api service up (one replica), torn down with its volumes."""
    busy = [p for p in [*API_PORTS, LB_PORT] if not _port_free(p)]
    if busy:
        pytest.fail(f"host ports {busy} are taken; the compose tests publish on them")
    env = _build()
    env.update(
        FCN_API_PORTS=f"{API_PORTS.start}-{API_PORTS.stop - 1}",
        FCN_LB_PORT=str(LB_PORT),
    )
    stack = Stack(env)
    stack.compose("--profile", "scale", "--profile", "train", "down", "-v", "--remove-orphans")
    start = time.monotonic()
    stack.compose("up", "-d", "--wait", "api", timeout=180)
    stack.start_to_ready_s = time.monotonic() - start
    print(f"compose up --wait api: {stack.start_to_ready_s:.1f} s")
    try:
        yield stack
    finally:
        stack.compose(
            "--profile",
            "scale",
            "--profile",
            "train",
            "down",
            "-v",
            "--remove-orphans",
            timeout=180,
        )
