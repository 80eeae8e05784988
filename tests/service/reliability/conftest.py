"""Fixtures for the reliability suite: the HTTP tests' models and real-server helpers, plus
process memory readings and a raw-socket client for requests httpx will not send."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx

from tests.service.http.conftest import (  # noqa: F401  (fixtures re-exported)
    _no_fcn_environment,
    grey_model,
    serve,
    slow_model,
)


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``: resident now, ``VmHWM``: its peak)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1))


def count_500s(url: str) -> float:
    """Responses with status >= 500 the server counted, from its /metrics."""
    text = httpx.get(url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("fcn_http_requests_total{") and re.search(r'status="5\d\d"', line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def raw_request(url: str, payload: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send ``payload`` on a fresh connection; return everything answered and the seconds."""
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks), time.perf_counter() - start
