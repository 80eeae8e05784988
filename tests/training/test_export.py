"""ONNX export: round trip through real ONNX Runtime sessions, parity failure, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fcn
from fcn.cli import main
from service.engine import Engine
from service.metadata import REQUIRED_KEYS, ModelMetadata
from training.checkpoint import Checkpoint, save_checkpoint
from training.export.onnx import (
    OPSET,
    ExportError,
    ParityError,
    export_model,
    model_metadata,
    read_metadata,
)

UNET_CONFIG = {
    "model": {
        "arch": "unet",
        "num_classes": 2,
        "in_channels": 1,
        "options": {"encoder": "resnet18"},
    },
    "data": {
        "layout": "folder",
        "val_fraction": 0.2,
        "seed": 0,
        "classes": ["membrane", "interior"],
        "palette": [[0, 0, 0], [255, 255, 255]],
        "mean": [0.449],
        "std": [0.226],
        "ignore_index": 255,
        "mask_values": [0, 255],
    },
}


def build(config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model_cfg = config["model"]
    model = fcn.build_model(
        model_cfg["arch"],
        num_classes=model_cfg["num_classes"],
        in_channels=model_cfg["in_channels"],
        **model_cfg.get("options", {}),
    )
    # FCN score layers start at zero (the paper's init): give them weights so parity means
    # something.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.01)
    return model.eval()


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory: pytest.TempPathFactory):
    model = build(UNET_CONFIG)
    out = tmp_path_factory.mktemp("export") / "unet.onnx"
    return model, export_model(model, UNET_CONFIG, out)


def check_round_trip(path: Path, model: torch.nn.Module, config: dict, multiple: int) -> None:
    """Checker, single file, metadata, pinned opset, symbolic N/H/W, runs at several sizes."""
    onnx.checker.check_model(str(path), full_check=True)
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        path.name
    ], "expected one self-contained file (no external data, no temp files)"
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}.get("", None) == OPSET
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("image", "logits")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str)
    assert dims[1] == config["model"]["in_channels"]

    meta = read_metadata(path)
    assert set(REQUIRED_KEYS) <= {p.key for p in proto.metadata_props}
    # The service's reader:
    parsed = ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert parsed.size_multiple == multiple
    assert parsed.classes == tuple(config["data"]["classes"])
    assert list(parsed.mean) == pytest.approx(config["data"]["mean"])
    assert meta.arch == config["model"]["arch"] and meta.version == 1
    assert meta.options == config["model"].get("options", {})

    engine = Engine.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    channels = config["model"]["in_channels"]
    for n, h, w in ((1, 1, 1), (2, 37, 70), (1, 64, 96)):
        x = torch.randn(n, channels, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        got = engine.run_normalised(x.numpy())
        assert got.shape == (n, config["model"]["num_classes"], h, w)
        np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
        if h % multiple == 0 and w % multiple == 0:  # the bare graph, no engine padding
            (raw,) = session.run(None, {"image": x.numpy()})
            np.testing.assert_allclose(raw, expected, atol=2e-3, rtol=1e-4)


def test_unet_round_trip(unet_export) -> None:
    model, result = unet_export
    assert result.parity is not None and len(result.parity.sizes) >= 3
    assert any(h % 32 or w % 32 for h, w in result.parity.sizes)
    assert max(result.parity.max_abs_diff) < 1e-3
    check_round_trip(result.path, model, UNET_CONFIG, multiple=32)


@pytest.mark.slow  # FCN-8s carries ~540 MB of VGG weights: ~25 s on 2 cores
def test_fcn8s_round_trip(tmp_path: Path) -> None:
    config = {**UNET_CONFIG, "model": {"arch": "fcn8s", "num_classes": 2, "in_channels": 1}}
    model = build(config)
    result = export_model(model, config, tmp_path / "fcn8s.onnx")
    check_round_trip(result.path, model, config, multiple=1)


# every registered model; the three FCNs carry ~540 MB each: ~3 min on 2 cores (`make test-long`)
@pytest.mark.long
@pytest.mark.parametrize("arch", fcn.list_models())
def test_every_registered_model_exports(arch: str, tmp_path: Path) -> None:
    options = {} if arch.startswith("fcn") else {"encoder": "resnet18"}
    config = {
        "model": {"arch": arch, "num_classes": 3, "in_channels": 1, "options": options},
        "data": {
            **UNET_CONFIG["data"],
            "classes": ["a", "b", "c"],
            "mask_values": None,
            "palette": [[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        },
    }
    model = build(config)
    out = tmp_path / f"{arch}.onnx"
    result = export_model(model, config, out)
    assert max(result.parity.max_abs_diff) < 1e-3


def test_legacy_exporter_round_trip(tmp_path: Path) -> None:
    config = {**UNET_CONFIG, "model": {**UNET_CONFIG["model"], "arch": "linknet"}}
    model = build(config)
    result = export_model(
        model,
        config,
        tmp_path / "legacy.onnx",
        exporter="legacy",
        parity_sizes=((1, 1), (13, 21), (40, 9)),
    )
    assert read_metadata(result.path).extra["exporter"] == "legacy"
    check_round_trip(result.path, model, config, multiple=32)


def test_parity_failure_raises_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    model = build(UNET_CONFIG)
    original = Engine.run_normalised

    def off_by_a_bit(self, batch):
        return original(self, batch) + 0.01

    monkeypatch.setattr(Engine, "run_normalised", off_by_a_bit)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="disagrees with torch") as info:
        export_model(model, UNET_CONFIG, out, exporter="legacy", parity_sizes=((1, 1), (33, 47)))
    assert info.value.report.max_abs_diff[0] == pytest.approx(0.01, abs=1e-3)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary folder


def test_metadata_validation() -> None:
    meta = model_metadata(UNET_CONFIG, size_multiple=32, extra={"best_metric": 0.8})
    assert meta.extra["best_metric"] == 0.8 and meta.ignore_index == 255
    bare = {
        "model": {"arch": "unet", "num_classes": 3, "in_channels": 3},
        "data": {"mean": [0.5] * 3, "std": [0.2] * 3},
    }
    defaults = model_metadata(bare, size_multiple=1)
    assert defaults.classes == ("class_0", "class_1", "class_2")
    assert len(defaults.palette) == 3
    with pytest.raises(ExportError, match="mean"):
        model_metadata({"model": UNET_CONFIG["model"]}, size_multiple=1)
    with pytest.raises(ExportError, match="3 values for 1 channels"):
        model_metadata(
            {**UNET_CONFIG, "data": {**UNET_CONFIG["data"], "std": [0.1] * 3}}, size_multiple=1
        )
    with pytest.raises(ExportError, match="required keys"):
        model_metadata(UNET_CONFIG, size_multiple=1, extra={"arch": "other"})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build(UNET_CONFIG)
    state = Checkpoint(
        model=model.state_dict(), config=UNET_CONFIG, epoch=7, step=70, best_metric=0.75
    )
    return save_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", state)


def test_cli_export_end_to_end(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli" / "model.onnx"
    extra = ["--metadata", "recipe=make default-model", "--metadata", "data_seed=0"]
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "parity with torch at 1x1, 97x130, 333x517" in printed
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["num_classes"] == 2 and props["size_multiple"] == 32
    # Facts from the checkpoint travel too.
    assert props["best_metric"] == 0.75 and props["epoch"] == 7
    assert props["source"] == "best.pt" and props["mask_values"] == [0, 255]
    # --metadata entries: text stays text, JSON values are parsed.
    assert props["recipe"] == "make default-model" and props["data_seed"] == 0


def test_flip_tta_export_runs_the_mirror_average_in_the_graph(
    checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "tta.onnx"
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--tta", "hflip"]
    assert main(args) == 0
    assert "parity with torch" in capsys.readouterr().out
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["tta"] == "hflip"
    # The graph's logits are the mean of the network's on the image and on its mirror image.
    model = build(UNET_CONFIG)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, 64, 96), dtype=np.float32))
    with torch.no_grad():
        plain = model(x)
        expected = (plain + model(x.flip(-1)).flip(-1)) / 2
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert not np.allclose(got, plain.numpy(), atol=1e-3), "the mirror pass changed nothing"


def test_cli_parity_failure_exits_nonzero(
    checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(
        Engine,
        "run_normalised",
        lambda self, batch: np.zeros((batch.shape[0], 2, *batch.shape[2:]), np.float32),
    )
    out = tmp_path / "model.onnx"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--exporter", "legacy"]
    assert main(["export", *args]) == 2
    assert "disagrees with torch" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing/best.pt"], "checkpoint not found"),
        (["--checkpoint", "{ckpt}", "--quantize", "int8"], "needs --calibration-data"),
        (
            ["--checkpoint", "{ckpt}", "--quantize", "int8", "--calibration-data", "nowhere"],
            "is not a folder",
        ),
        (["--onnx", "m.onnx"], "only makes sense with --quantize"),
        (["--checkpoint", "{ckpt}", "--metadata", "arch=x"], "may not replace required keys"),
    ],
)
def test_cli_errors(
    args: list[str], message: str, checkpoint: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{ckpt}", str(checkpoint)) for a in args]
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "model.onnx").exists()


def test_cli_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
