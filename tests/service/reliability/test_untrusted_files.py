"""Untrusted model files and names: external data outside the model's folder, pickles carrying
code, and model names sent in requests.

"Before any file is read" is shown with a FIFO: opening one for reading blocks until a writer
comes, so a loader that touched the data file would hang; a refusal within a second proves it
never opened it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from service.backends.external_data import check_external_data, external_locations
from service.errors import ModelLoadError
from tests.service.conftest import OPSET, default_metadata

REPO = Path(__file__).resolve().parents[3]


def external_data_model(folder: Path, location: str) -> Path:
    """A valid 1x1-conv model (3 -> 3 classes) whose weights live at ``location``."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "36")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"])],
        "external",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    helper.set_model_props(model, {k: json.dumps(v) for k, v in default_metadata(3, 3, 1).items()})
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the model folders holding a FIFO and a real weights file."""
    folder = tmp_path / "outside"
    folder.mkdir()
    os.mkfifo(folder / "fifo")
    (folder / "w.bin").write_bytes(np.eye(3, dtype=np.float32).tobytes())
    return folder


def hostile_models(tmp_path: Path, outside: Path) -> dict[str, Path]:
    models = {
        "dot-dot": external_data_model(tmp_path / "dotdot", "../outside/fifo"),
        "nested-dot-dot": external_data_model(tmp_path / "nested", "sub/../../outside/fifo"),
        "absolute": external_data_model(tmp_path / "absolute", str(outside / "fifo")),
        "symlink-to-fifo": external_data_model(tmp_path / "link", "w.bin"),
        "symlink-to-file": external_data_model(tmp_path / "linkfile", "w.bin"),
        "symlinked-folder": external_data_model(tmp_path / "linkdir", "sub/fifo"),
    }
    os.symlink(outside / "fifo", tmp_path / "link" / "w.bin")
    os.symlink(outside / "w.bin", tmp_path / "linkfile" / "w.bin")
    os.symlink(outside, tmp_path / "linkdir" / "sub")
    return models


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    from service.engine import Engine

    path = external_data_model(tmp_path / "ok", "w.bin")
    (tmp_path / "ok" / "w.bin").write_bytes(np.eye(3, dtype=np.float32).tobytes())
    assert external_locations(path) == [("w", "w.bin")]
    check_external_data(path)
    engine = Engine.load(path)
    pixels = np.zeros((4, 5, 3), np.uint8)
    pixels[..., 2] = 255
    assert (engine.predict(pixels) == 2).all()


def test_our_check_refuses_every_escape_without_opening_the_data(tmp_path, outside) -> None:
    for name, path in hostile_models(tmp_path, outside).items():
        start = time.perf_counter()
        with pytest.raises(ModelLoadError, match="external data of tensor 'w'") as info:
            check_external_data(path)
        assert time.perf_counter() - start < 0.5, name
        assert "inside the model's folder" in str(info.value)


def test_engine_and_serve_refuse_them_fast_with_a_model_load_error(tmp_path, outside) -> None:
    """In a fresh interpreter with a deadline: a loader that opened the FIFO would hang."""
    models = hostile_models(tmp_path, outside)
    code = textwrap.dedent(
        """
        import sys, time
        from service.engine import Engine
        from service.errors import ModelLoadError
        for path in sys.argv[1:]:
            start = time.perf_counter()
            try:
                Engine.load(path)
                print("LOADED", path)
            except ModelLoadError as exc:
                print("REFUSED", round(time.perf_counter() - start, 3), exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, models.values())],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(models), done.stdout + done.stderr
    for line in lines:
        assert line.startswith("REFUSED"), line
        assert float(line.split()[1]) < 1.0, line
    served = subprocess.run(
        [sys.executable, "-m", "fcn.cli", "serve", "--model", str(models["dot-dot"])],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert served.returncode != 0
    assert "external data" in served.stdout + served.stderr


def test_a_truncated_model_file_is_a_load_error_not_a_crash(tmp_path: Path) -> None:
    path = external_data_model(tmp_path / "cut", "w.bin")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ModelLoadError):
        check_external_data(path)


def test_a_checkpoint_pickle_carrying_code_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from fcn.weights import load_state_dict_file
    from training.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": {}, "x": Payload()}, evil)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        load_state_dict_file(evil)
    assert not marker.exists()
    # The same file does run its code under a plain pickle load: the test is not vacuous.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_model_names_in_requests_never_reach_the_filesystem(conv_model: Path) -> None:
    """Every file the process opens while serving hostile names is recorded (audit hook)."""
    code = textwrap.dedent(
        """
        import sys
        from fastapi.testclient import TestClient
        from service.http.app import create_app
        from service.http.settings import Settings

        app = create_app(Settings(models=[f"conv={sys.argv[1]}"], access_log=False))
        opened = []
        with TestClient(app) as client:
            client.get("/readyz")
            sys.addaudithook(
                lambda event, args: opened.append(str(args[0]))
                if event in ("open", "os.listdir", "os.scandir") else None
            )
            for name in ("../../../../etc/passwd", "/etc/passwd", "conv.onnx", "~root"):
                r = client.post("/v1/segment", params={"model": name},
                                files={"image": ("a.png", b"x")})
                print(r.status_code, r.json()["error"]["code"], r.json()["error"]["message"])
        print("OPENED", [p for p in opened if "passwd" in p or "onnx" in p or "root" in p])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(conv_model)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 5, done.stdout + done.stderr
    for line in lines[:4]:
        assert line.startswith("404 unknown_model"), line
        assert "loaded models: conv" in line
    assert lines[4] == "OPENED []"
