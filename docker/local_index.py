"""Serve this machine's local pip indexes on loopback, for the train image's torch in CI.

The PyTorch CPU wheel index is not reachable from CI, and PyPI's Linux torch is a multi-GB CUDA
build. Where the machine's pip already reads local ``file://`` indexes (``pip config``'s
``extra-index-url``) that hold torch, this serves their common parent folder over HTTP on
127.0.0.1 (a build with ``network: host`` reaches it) and writes the build arguments to use:

    TORCH_INDEX_URL        the local index holding torch
    TORCH_EXTRA_INDEX_URL  the other local indexes, then PyPI (what torch needs beyond them)
    TORCH_REQUIREMENTS     torch and torchvision pinned to the local index's newest releases, so
                           PyPI's copies of the same or newer releases are never downloaded

    python docker/local_index.py --env-file torch.env &   # serves until killed

The port is fixed (``--port``, default 38190): the URLs are build arguments, and a new URL on
every run would invalidate the build cache of the torch layer.

With no such index it writes nothing and exits 3: the Dockerfile's default index applies.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

PYPI = "https://pypi.org/simple"


def local_indexes() -> list[Path]:
    """The ``file://`` index folders the machine's pip configuration names, in its order."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    found = []
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("index-url", "extra-index-url")):
            for url in value.strip("'\"").split():
                if url.startswith("file://") and Path(urlparse(url).path).is_dir():
                    found.append(Path(urlparse(url).path))
    return found


def newest(index: Path, project: str) -> str | None:
    """The newest release of ``project`` with a wheel in a PEP 503 ``index``."""
    page = index / project / "index.html"
    if not page.is_file():
        return None
    versions = re.findall(rf"{project}-([0-9][^-]*?)-", page.read_text())
    key = lambda v: tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0]))  # noqa: E731
    return max(versions, key=key) if versions else None


class Handler(SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001
        # sendfile: the kernel copies the multi-GB wheels, not a Python loop
        outputfile.flush()
        self.connection.sendfile(source)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # pip asks for hundreds of files; the build log says what it took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=38190, help="loopback port to serve on")
    args = parser.parse_args()
    indexes = local_indexes()
    torch_index = next((i for i in indexes if newest(i, "torch")), None)
    if torch_index is None or not newest(torch_index, "torchvision"):
        sys.stderr.write("no local index holds torch and torchvision\n")
        return 3
    root = Path(os.path.commonpath([str(i) for i in indexes]))
    handler = functools.partial(Handler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    url = lambda index: f"{base}/{index.relative_to(root).as_posix()}"  # noqa: E731
    extra = [url(i) for i in indexes if i != torch_index] + [PYPI]
    pins = [f"{p}=={newest(torch_index, p)}" for p in ("torch", "torchvision")]
    tmp = args.env_file.with_suffix(".tmp")
    tmp.write_text(
        f"TORCH_INDEX_URL={url(torch_index)}\n"
        f"TORCH_EXTRA_INDEX_URL='{' '.join(extra)}'\n"
        f"TORCH_REQUIREMENTS='{' '.join(pins)}'\n"
    )
    tmp.rename(args.env_file)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
