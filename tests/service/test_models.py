"""Model specs, folder discovery and names: what ``fcn serve`` and ``fcn predict`` load."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelLoadError
from service.models import ModelSource, check_name, discover, file_sha256, model_sources, parse_spec


def test_specs_name_path_and_stem(tmp_path: Path) -> None:
    assert parse_spec("cells=/m/a.onnx") == ModelSource("cells", Path("/m/a.onnx"))
    assert parse_spec(str(tmp_path / "roads.v2.onnx")).name == "roads.v2"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "", ".hidden", "a b", "x" * 65])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        check_name(name)


def test_discover_sorted_stems_and_missing_folder(tmp_path: Path) -> None:
    for name in ("b.onnx", "a.onnx", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [s.name for s in discover(tmp_path)] == ["a", "b"]
    with pytest.raises(ModelLoadError, match="models folder not found"):
        discover(tmp_path / "gone")


def test_resolve_refuses_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="two models are named 'a'"):
        model_sources([str(tmp_path / "a.onnx")], tmp_path)
    assert [s.name for s in model_sources(["x=/m/1.onnx"], tmp_path)] == ["x", "a"]


def test_sha256(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(tmp_path / "f") == expected
