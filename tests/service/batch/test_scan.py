"""Which files a batch picks up: recursion, globs, symlinks, collisions, the output folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from service.batch.scan import scan_inputs


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (200, 10, 10)).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in ("a.png", "b.jpg", "day1/c.png", "day1/deep/d.tif", "day2/e.png", ".hidden/f.png"):
        _image(root / rel)
    (root / "notes.txt").write_text("not an image")
    return root


def _stems(scan) -> list[str]:
    return [item.stem.as_posix() for item in scan.items]


def test_recursive_by_default_sorted_and_hidden_left_out(tree: Path) -> None:
    assert _stems(scan_inputs([tree])) == ["a", "b", "day1/c", "day1/deep/d", "day2/e"]
    assert _stems(scan_inputs([tree], recursive=False)) == ["a", "b"]


def test_globs_match_the_name_or_the_relative_path(tree: Path) -> None:
    assert _stems(scan_inputs([tree], globs=["*.png"])) == ["a", "day1/c", "day2/e"]
    assert _stems(scan_inputs([tree], globs=["day1/*"])) == ["day1/c", "day1/deep/d"]
    assert _stems(scan_inputs([tree], globs=["b.*", "*.tif"])) == ["b", "day1/deep/d"]
    assert _stems(scan_inputs([tree], globs=["*.gif"])) == []


def test_symlinks_outside_the_folder_are_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    _image(outside / "private.png")
    os.symlink(outside, tree / "escape_dir")
    os.symlink(outside / "private.png", tree / "escape.png")
    os.symlink(tree / "a.png", tree / "day2" / "alias.png")  # inside: followed
    os.symlink(tree, tree / "day1" / "loop")  # inside, but a loop: visited once
    scan = scan_inputs([tree])
    assert _stems(scan) == ["a", "b", "day1/c", "day1/deep/d", "day2/alias", "day2/e"]
    assert all("private" not in str(item.source) for item in scan.items)
    outside_links = sorted(r.source.name for r in scan.rejected)
    assert outside_links == ["escape.png", "escape_dir"]
    assert all(not r.failed and "outside" in r.reason for r in scan.rejected)


def test_collisions_keep_the_first_and_report_the_rest(tree: Path) -> None:
    _image(tree / "a.bmp")  # sorts before a.png: it wins the name "a"
    scan = scan_inputs([tree, tree / "day1" / "c.png"])
    assert _stems(scan).count("a") == 1
    assert next(i for i in scan.items if i.stem == Path("a")).source.name == "a.bmp"
    reasons = {r.source.name: r.reason for r in scan.rejected}
    assert set(reasons) == {"a.png"} and "already used" in reasons["a.png"]
    # A named file lands at the top: "c" is free there, so both day1/c and c are fine.
    assert {"day1/c", "c"} <= set(_stems(scan))


def test_output_folder_inside_the_input_is_not_scanned(tree: Path) -> None:
    _image(tree / "out" / "a_mask.png")
    assert "out/a_mask" not in _stems(scan_inputs([tree], exclude=[tree / "out"]))
    assert "out/a_mask" in _stems(scan_inputs([tree]))


def test_missing_inputs_are_failures(tmp_path: Path) -> None:
    scan = scan_inputs([tmp_path / "nope.png"])
    assert scan.items == [] and scan.rejected[0].failed
    assert "no such file" in scan.rejected[0].reason
