"""A loopback HTTP server standing in for where Label Studio tasks' images live.

Serves ``/data/upload/<name>`` and ``/data/local-files/?d=<name>`` from a dict (only with
``Authorization: Token <token>``, like Label Studio), ``/public/<name>`` to anyone, ``/redirect`` -> ``/public/...`` and counts every
request so a test can tell whether the service fetched at all.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ImageHost:
    files: dict[str, bytes]
    token: str
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@contextmanager
def image_host(files: dict[str, bytes], token: str = "ls-token") -> Iterator[ImageHost]:
    host = ImageHost(files, token)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            auth = self.headers.get("Authorization")
            host.requests.append((self.path, auth))
            path, _, query = self.path.partition("?")
            if path == "/data/local-files/":  # Label Studio's local files: ?d=<path>
                path = "/data/upload/" + urllib.parse.parse_qs(query).get("d", [""])[0]
            if path == "/redirect":
                self._send(302, headers={"Location": f"{host.url}/public/{next(iter(files))}"})
                return
            for prefix, needs_token in (("/data/upload/", True), ("/public/", False)):
                if path.startswith(prefix):
                    if needs_token and auth != f"Token {host.token}":
                        self._send(401, b'{"detail": "no token"}')
                        return
                    name = path[len(prefix) :]
                    if name in files:
                        self._send(200, files[name], {"Content-Type": "image/jpeg"})
                        return
            self._send(404, b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
