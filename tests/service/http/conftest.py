"""Fixtures for the HTTP tests: test models, in-process clients, and a real uvicorn server.

``slow_model`` is a stack of 3x3 convolutions: its run time grows with the image's pixels, so a
test picks an image size that keeps a request in flight long enough (no sleep in the app).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.http.launcher import Server, start
from tests.service.conftest import OPSET, default_metadata

REPO = Path(__file__).resolve().parents[3]


def make_slow_model(path: Path, *, depth: int = 12, width: int = 16, num_classes: int = 3) -> Path:
    """A valid model whose cost is ``depth`` 3x3 convolutions of ``width`` channels per pixel."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    nodes, inits, x = [], [], "image"
    for i in range(depth):
        cin = 3 if i == 0 else width
        w = rng.normal(0, np.sqrt(2 / (cin * 9)), size=(width, cin, 3, 3)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    head = rng.normal(0, 0.5, size=(num_classes, width, 1, 1)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("Conv", [x, "head"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes, "H", "W"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    import json

    meta = default_metadata(3, num_classes, 1)
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def slow_model(model_dir: Path) -> Path:
    return make_slow_model(model_dir / "slow.onnx")


@pytest.fixture(scope="session")
def grey_model(make_model) -> Path:
    return make_model("grey", kind="conv", in_channels=1, num_classes=2)


def image_bytes(
    width: int, height: int, mode: str = "RGB", fmt: str = "PNG", seed: int = 0, **save
) -> bytes:
    """A random image of ``width`` x ``height`` in ``mode``, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels[:, :, 0] if bands == 1 else pixels, mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def start_server(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> Server:
    """Start ``fcn serve ARGS`` from this checkout on a free port, ready on ``/readyz``."""
    log = Path(tempfile.mkstemp(prefix="serve-", suffix=".log", dir=tmp_path)[1])
    full_env = {"PYTHONPATH": str(REPO), **(env or {})}
    return start(args, log, env=full_env, ready_timeout=timeout, cwd=REPO)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(args, env=None)``: a started server, stopped after the test."""
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Server:
        server = start_server(args, tmp_path, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _no_fcn_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read FCN_* variables: the caller's environment must not change a test."""
    for name in list(os.environ):
        if name.startswith("FCN_"):
            monkeypatch.delenv(name)
