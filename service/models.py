"""Which model files to serve, and under which names (shared by ``fcn serve`` and ``fcn predict``).

A model is named by a *spec*:

* ``default`` — the aerial land-cover model bundled inside the package (``service/assets``;
  building, land, road, vegetation, water; docs/default-model.md);
* ``demo`` — the bundled shapes model (the classes ``fcn data demo`` draws), for the demo
  pipeline;
* ``NAME=PATH`` — the ONNX file at ``PATH``, served as ``NAME``;
* ``PATH`` — the ONNX file at ``PATH``, served under its file stem.

``--models-dir DIR`` adds every ``DIR/*.onnx`` under its stem. With no spec and no folder both
bundled models are served, ``default`` first (the default). Names are checked against
:data:`NAME_PATTERN`; a name sent in a request is only ever looked up among the loaded models,
never joined to a path.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from service.errors import ModelLoadError

DEFAULT_MODEL_NAME = "default"
DEMO_MODEL_NAME = "demo"
# Bundled models: name -> file in service/assets.
BUNDLED: dict[str, str] = {DEFAULT_MODEL_NAME: "default.onnx", DEMO_MODEL_NAME: "demo.onnx"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ModelSource:
    """A model to load: the name it is served under and its file."""

    name: str
    path: Path


def bundled_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """The file of the bundled model ``name`` (``default`` or ``demo``).

    Raises:
        KeyError: not a bundled model's name.
        ModelLoadError: this installation lacks it (a source checkout where it was deleted).
    """
    path = Path(str(resources.files("service") / "assets" / BUNDLED[name]))
    if not path.is_file():
        raise ModelLoadError(
            f"the bundled {name} model is missing ({path}); rebuild it with "
            f"`make {name}-model` or name a model file"
        )
    return path


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    Raises:
        ValueError: the name has characters other than letters, digits, '.', '_' and '-', does
            not start with a letter or digit, or is longer than 64 characters.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_spec(spec: str) -> ModelSource:
    """Turn ``default``, ``demo``, ``NAME=PATH`` or ``PATH`` into a :class:`ModelSource`.

    Raises:
        ValueError: an invalid name.
        ModelLoadError: a bundled model was asked for and is not installed.
    """
    if spec in BUNDLED:
        return ModelSource(spec, bundled_model_path(spec))
    name, sep, path = spec.partition("=")
    if sep and name and path:
        return ModelSource(check_name(name), Path(path))
    path = Path(spec)
    return ModelSource(check_name(path.stem), path)


def discover(models_dir: str | os.PathLike) -> list[ModelSource]:
    """Every ``*.onnx`` file directly inside ``models_dir``, named by its stem, sorted.

    Raises:
        ModelLoadError: the folder does not exist.
        ValueError: a file stem is not a valid model name.
    """
    folder = Path(models_dir)
    if not folder.is_dir():
        raise ModelLoadError(f"models folder not found: {folder}")
    found = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    return [ModelSource(check_name(p.stem), p) for p in found]


def model_sources(
    specs: Iterable[str] = (), models_dir: str | os.PathLike | None = None
) -> list[ModelSource]:
    """The models to serve: the given specs, then the folder's files; if none, the bundled
    ``default`` and ``demo``.

    Raises:
        ValueError: two models with the same name, or an invalid name.
        ModelLoadError: a missing folder, or no bundled model when it is needed.
    """
    sources = [parse_spec(spec) for spec in specs]
    if models_dir is not None:
        sources.extend(discover(models_dir))
    if not sources:
        sources = [parse_spec(name) for name in BUNDLED]
    seen: dict[str, Path] = {}
    for source in sources:
        if source.name in seen:
            raise ValueError(
                f"two models are named {source.name!r} ({seen[source.name]} and {source.path}); "
                "name one with NAME=PATH"
            )
        seen[source.name] = source.path
    return sources


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
