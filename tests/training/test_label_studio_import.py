"""``fcn data import-label-studio``: exports (written as Label Studio writes them) -> a dataset
folder ``fcn train`` reads; what it refuses and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.brush_regions import brush_region
from training.data.label_studio import LabelStudioImportError, import_export

ROOT = Path(__file__).resolve().parents[2]


def brush(label: str, painted: np.ndarray) -> dict:
    return brush_region(painted, label)


def write_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (10, 20, 30)).save(folder / name)


def truth(height: int = 6, width: int = 8) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, 4:] = 1
    mask[2:4, 1:3] = 2
    return mask


def export(tmp_path: Path, tasks: list[dict]) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def task(task_id: int, image: str, annotations: list) -> dict:
    return {"id": task_id, "data": {"image": image}, "annotations": annotations}


def annotation(results: list, *, cancelled: bool = False, updated: str = "2026-01-01") -> dict:
    return {"id": 1, "result": results, "was_cancelled": cancelled, "updated_at": updated}


def test_import_writes_a_dataset_fcn_train_reads(tmp_path: Path) -> None:
    mask = truth()
    results = [brush(name, mask == i) for i, name in enumerate(["sea", "land", "rock"])]
    stale = annotation([brush("sea", np.ones_like(mask, bool))], updated="2025-01-01")
    tasks = [
        task(1, "/data/upload/1/0a1b2c3d-coast.png", [stale, annotation(results)]),
        task(2, "/data/upload/1/99999999-empty.png", []),
        task(3, "/data/upload/1/12345678-skip.png", [annotation(results, cancelled=True)]),
    ]
    write_images(tmp_path / "pics", {"coast.png": (8, 6)})
    out = tmp_path / "dataset"
    report = import_export(
        export(tmp_path, tasks), out, classes=["sea", "land", "rock"], images=tmp_path / "pics"
    )
    assert report.written == ["coast.png"]
    assert sum(len(v) for v in report.skipped.values()) == 2
    with Image.open(out / "masks" / "coast.png") as png:
        assert png.mode == "P"
        np.testing.assert_array_equal(np.asarray(png), mask)  # the latest annotation won
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["classes"] == ["sea", "land", "rock"] and meta["ignore_index"] == 255
    from training.config import DataConfig
    from training.data.datasets import build_datasets

    _, dataset, info = build_datasets(DataConfig(root=str(out)), split="all")
    assert info.num_classes == 3 and len(dataset) == 1


def test_uncovered_pixels_get_the_ignore_index(tmp_path: Path) -> None:
    mask = truth()
    tasks = [task(1, "/data/upload/1/0a1b2c3d-a.png", [annotation([brush("land", mask == 1)])])]
    write_images(tmp_path / "pics", {"a.png": (8, 6)})
    import_export(export(tmp_path, tasks), tmp_path / "d", images=tmp_path / "pics")
    with Image.open(tmp_path / "d" / "masks" / "a.png") as png:
        got = np.asarray(png)
    np.testing.assert_array_equal(got, np.where(mask == 1, 0, 255))  # classes guessed: ["land"]


@pytest.mark.parametrize(
    ("tasks", "options", "text"),
    [
        (
            [task(1, "/data/upload/1/a.png", [annotation([brush("cat", truth() == 1)])])],
            {"classes": ["sea", "land"]},
            r"'cat' \(tasks 1\)",
        ),
        (
            [task(1, "/data/upload/1/nope.png", [annotation([brush("sea", truth() == 1)])])],
            {},
            "no nope.png",
        ),
        ([task(1, "/data/upload/1/a.png", [])], {}, "no brush or polygon annotations"),
        (
            [task(1, "/data/upload/1/a.png", [annotation([brush("sea", np.ones((3, 3), bool))])])],
            {},
            "disagree on its size",
        ),
        (
            [task(1, "/data/upload/1/a.png", [annotation([brush("sea", truth() == 1)])])],
            {"ignore_index": 0},
            "not a class index",
        ),
    ],
)
def test_refusals_name_the_problem(tmp_path: Path, tasks, options, text) -> None:
    write_images(tmp_path / "pics", {"a.png": (8, 6)})
    with pytest.raises(LabelStudioImportError, match=text):
        import_export(export(tmp_path, tasks), tmp_path / "d", images=tmp_path / "pics", **options)


def test_command_line_and_non_empty_out(tmp_path: Path) -> None:
    mask = truth()
    tasks = [task(1, "/data/upload/1/0a1b2c3d-a.png", [annotation([brush("sea", mask == 0)])])]
    write_images(tmp_path / "pics", {"a.png": (8, 6)})
    path = export(tmp_path, tasks)
    command = [sys.executable, "-m", "fcn", "data", "import-label-studio", str(path)]
    command += [
        "--out",
        str(tmp_path / "d"),
        "--images",
        str(tmp_path / "pics"),
        "--classes",
        "sea,land",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 image/mask pair(s) written" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr
