"""Same engine, same masks: ``fcn predict`` and ``POST /v1/segment`` agree byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn.cli import main

pytest.importorskip("fastapi", reason="the HTTP service needs the serve extra")


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    folder.mkdir()
    rgb = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    rgb.save(folder / "rgb.png")
    rgb.save(folder / "photo.jpg", quality=85)
    Image.fromarray(rng.integers(0, 256, (23, 30), dtype=np.uint8)).save(folder / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: both sides must apply the same orientation
    rgb.save(folder / "rotated.jpg", exif=exif)
    return sorted(folder.iterdir())


def test_batch_outputs_equal_the_http_responses(conv_model: Path, tmp_path: Path, capsys) -> None:
    from fastapi.testclient import TestClient

    from service.http.app import create_app
    from service.http.settings import Settings

    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["predict", str(conv_model), str(tmp_path / "in"), "-o", str(out)]
    assert main([*argv, "-f", "index,color,overlay,json"]) == 0
    capsys.readouterr()
    settings = Settings(models=[f"conv={conv_model}"])
    with TestClient(create_app(settings)) as client:
        for path in images:
            for fmt, suffix in (
                ("index", "_mask.png"),
                ("color", "_color.png"),
                ("overlay", "_overlay.png"),
            ):
                response = client.post(
                    f"/v1/segment?format={fmt}", files={"image": (path.name, path.read_bytes())}
                )
                assert response.status_code == 200, response.text
                assert response.content == (out / f"{path.stem}{suffix}").read_bytes(), (
                    path.name,
                    fmt,
                )
            response = client.post(
                "/v1/segment?format=json", files={"image": (path.name, path.read_bytes())}
            )
            served, written = response.json(), json.loads((out / f"{path.stem}.json").read_text())
            assert served["classes"] == written["classes"]
    rotated = Image.open(io.BytesIO((out / "rotated_mask.png").read_bytes()))
    assert rotated.size == (45, 61)  # EXIF orientation 6 swaps the sides
