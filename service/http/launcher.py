"""Start ``fcn serve`` (or any HTTP server) on a loopback port, wait until it is ready, stop it.

The one launcher of the end-to-end tests and the benchmarks, and usable from a notebook:
``with fcn_serve(["--model", "m.onnx"], Path("serve.log")) as server: http("GET", server.url)``.
Standard library only (no FastAPI, no HTTP client package): a server process is a subprocess,
and :func:`http` is a small ``urllib`` client that returns error statuses instead of raising.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lower(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns (status, headers with lower-case names, body), errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()


@dataclass
class Server:
    """A started server: its base URL, its process, and the file its output goes to."""

    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get_json(self, path: str) -> dict:
        """``GET path`` as JSON; RuntimeError on any status but 200."""
        status, _, body = http("GET", self.url + path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)

    def stop(self, grace: float = 20) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        return stop(self, grace)


def wait_ready(server: Server, timeout: float, path: str = "/readyz") -> None:
    """Poll ``path`` until 200; fail with the server's output if it exits or times out."""
    what = " ".join(map(str, server.process.args[1:4]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            if http("GET", server.url + path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s:\n{server.output()}")


def stop(server: Server, grace: float = 20) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(grace)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    return server.process.returncode


def start(
    args: Sequence[str],
    log: Path,
    python: str | os.PathLike = sys.executable,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60,
    cwd: str | os.PathLike | None = None,
) -> Server:
    """Start ``python -m fcn serve ARGS`` on 127.0.0.1 and a free port; return it once ready.

    The caller stops it (:meth:`Server.stop`); a server that never gets ready is stopped here.
    """
    port = free_port()
    command = [str(python), "-m", "fcn", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return launch([*command, *args], port, log, env, ready_timeout, cwd)


@contextmanager
def fcn_serve(args: Sequence[str], log: Path, **options: Any) -> Iterator[Server]:
    """:func:`start` (same arguments) as a context manager: the server is stopped on exit."""
    server = start(args, log, **options)
    try:
        yield server
    finally:
        stop(server)


def launch(
    command: Sequence[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60,
    cwd: str | os.PathLike | None = None,
    ready_path: str = "/readyz",
    inherit_env: bool = True,
) -> Server:
    """Run ``command``, a server listening on 127.0.0.1:``port``; return it once
    ``ready_path`` answers 200. Output goes to ``log``; ``env`` adds to this process's
    environment, or with ``inherit_env=False`` is the whole environment.

    The caller stops it (:func:`stop`); a server that never gets ready is stopped here.
    """
    environment = {**(os.environ if inherit_env else {}), **(env or {})}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            list(command), stdout=sink, stderr=subprocess.STDOUT, env=environment, cwd=cwd
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server, ready_timeout, ready_path)
    except BaseException:
        stop(server)
        raise
    return server


def multipart(
    content: bytes, filename: str = "image.png", content_type: str = "image/png"
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with the file in the ``image`` field, and its headers."""
    boundary = "fcnseg-e2e-boundary"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
