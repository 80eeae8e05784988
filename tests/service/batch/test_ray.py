"""``--engine ray`` on a local Ray (2 CPUs) writes the local engine's outputs, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.cli import main

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install 'fcnseg[ray]')")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(1)
    for i in range(10):
        sub = root / ("sub" if i % 3 == 0 else ".")
        sub.mkdir(parents=True, exist_ok=True)
        shape = (20 + i, 33, 3) if i % 2 else (17, 12 + i)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(sub / f"im{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_ray_engine_writes_the_same_bytes_as_the_local_engine(
    conv_model: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    import ray

    formats = ["-f", "index,color,overlay,json", "--intra-op-threads", "1"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["predict", str(conv_model), str(folder), "-o", str(local), *formats]) == 1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        argv = ["predict", str(conv_model), str(folder), "-o", str(remote), *formats]
        summary = tmp_path / "ray.json"
        code = main([*argv, "--engine", "ray", "--actors", "2", "--summary", str(summary)])
    finally:
        ray.shutdown()
    captured = capsys.readouterr()
    assert code == 1 and captured.err.count("FAILED") == 2  # broken.jpg, once per engine
    assert "10 ok, 1 failed" in captured.out.splitlines()[-1]
    expected = _tree(local)
    assert len(expected) == 40 and _tree(remote) == expected
    rows = json.loads(summary.read_text())
    assert [Path(r["path"]).name for r in rows][:3] == ["broken.jpg", "im1.png", "im2.png"]
    assert sum(r["status"] == "ok" for r in rows) == 10
    ok = next(r for r in rows if r["status"] == "ok")
    assert sum(ok[f"fraction_class{i}"] for i in range(4)) == pytest.approx(1.0)


def test_the_ray_driver_reads_the_classes_without_loading_the_model(
    conv_model: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import service.batch.ray
    import service.engine
    from service.batch.runner import BatchCounts

    def no_load(*args, **kwargs):
        raise AssertionError("the driver loaded the model")

    seen = {}

    def fake_run_ray(path, config, items, out_dir, options, **kwargs):
        seen.update(path=path, items=len(items), concurrency=config.concurrency)
        return BatchCounts(ok=len(items))

    monkeypatch.setattr(service.engine.Engine, "load", no_load)
    monkeypatch.setattr(service.batch.ray, "run_ray", fake_run_ray)
    summary = tmp_path / "rows.csv"
    argv = ["predict", str(conv_model), str(folder), "-o", str(tmp_path / "out")]
    assert main([*argv, "--engine", "ray", "--summary", str(summary)]) == 0
    assert seen == {"path": conv_model, "items": 11, "concurrency": 1}
    header = summary.read_text().splitlines()[0]  # the classes came from the metadata
    assert [f"fraction_class{i}" for i in range(4)] == header.split(",")[-4:]
    monkeypatch.undo()
    missing = ["predict", str(tmp_path / "missing.onnx"), str(folder), "-o", str(tmp_path / "o")]
    assert main([*missing, "--engine", "ray"]) == 2  # a missing model fails on the driver
    assert "model file not found" in capsys.readouterr().err
