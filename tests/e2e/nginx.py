"""Run the real nginx with the project's docker/nginx.conf, adapted to loopback ports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from service.http.launcher import free_port, http
from tests.requirements import require_or_skip

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "docker" / "nginx.conf"


def find_nginx() -> str:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not nginx:
        require_or_skip(
            "nginx not installed (apt-get install nginx; .ci/run does this)", module=True
        )
    return nginx


def adapt_config(text: str, upstreams: Sequence[str], port: int, workdir: Path) -> str:
    """docker/nginx.conf for this machine: the compose service name becomes the given
    loopback upstreams (each keeping the line's parameters), the listen port a free loopback
    port, and /tmp paths a private folder. Everything else is the real file."""
    pattern = re.compile(r"^(\s*)server\s+api:\d+(\s[^;]*)?;", re.M)
    match = pattern.search(text)
    if match is None or len(pattern.findall(text)) != 1:
        raise ValueError("docker/nginx.conf must have exactly one `server api:PORT ...;` line")
    indent, params = match.group(1), match.group(2) or ""
    servers = "\n".join(f"{indent}server {u}{params};" for u in upstreams)
    text = pattern.sub(lambda _: servers, text)
    text, listens = re.subn(
        r"^(\s*)listen\s+\d+;", rf"\1listen 127.0.0.1:{port};", text, flags=re.M
    )
    if listens != 1:
        raise ValueError("docker/nginx.conf must have exactly one `listen PORT;` line")
    text = text.replace("/tmp/", f"{workdir}/")
    if os.geteuid() == 0:
        # as root nginx would switch its workers to `nobody`, who cannot enter pytest's
        # private temporary folders
        text = "user root;\n" + text
    return text


@contextmanager
def run_nginx(upstreams: Sequence[str], workdir: Path) -> Iterator[str]:
    """nginx in front of ``upstreams`` (host:port); yields its base URL."""
    nginx = find_nginx()
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(adapt_config(NGINX_CONF.read_text(), upstreams, port, workdir))
    log = workdir / "nginx.log"
    command = [nginx, "-e", "stderr", "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"]
    check = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if http("GET", url + "/nginx-health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"nginx did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
