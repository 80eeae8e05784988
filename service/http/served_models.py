"""The models one app serves: loaded engines by name, with what ``/v1/models`` reports."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from service.engine import Engine
from service.formats.registry import ENCODERS
from service.models import DEFAULT_MODEL_NAME

logger = logging.getLogger(__name__)

# A model's version is this many hex digits of its file's SHA-256 (48 bits: no clash in practice).
VERSION_DIGITS = 12


@dataclass(frozen=True)
class LoadedModel:
    """One served model: its name, engine and file checksum."""

    name: str
    engine: Engine
    sha256: str

    @property
    def version(self) -> str:
        """The content-hash prefix that names this version of the model in every answer."""
        return self.sha256[:VERSION_DIGITS]

    def describe(self, default: bool) -> dict:
        """The ``/v1/models`` entry (and ``/v1/models/{name}``'s answer)."""
        meta = self.engine.metadata
        choice = self.engine.choice
        return {
            "name": self.name,
            "arch": meta.arch,
            "classes": list(meta.classes),
            "palette": [list(c) for c in meta.palette],
            "in_channels": meta.in_channels,
            "size_multiple": meta.size_multiple,
            "version": self.version,
            "sha256": self.sha256,
            "provider": self.engine.providers[0],
            "backend": self.engine.backend_name,
            "precision": self.engine.precision,
            # why auto picked this path, and each path's check on this CPU's reference crops
            "precision_reason": choice.reason if choice else None,
            "precision_checks_here": dict(choice.checks) if choice else {},
            "default": default,
            "formats": [encoder.describe() for encoder in ENCODERS.values()],
        }


class ServedModels:
    """Loaded models by name. A requested name is only ever a key here, never a path."""

    def __init__(self, models: Iterable[LoadedModel], default: str | None = None) -> None:
        self.models = {m.name: m for m in models}
        if not self.models:
            raise ValueError("no models to serve")
        if default is None:
            default = DEFAULT_MODEL_NAME if DEFAULT_MODEL_NAME in self.models else None
            default = default or next(iter(self.models))
        if default not in self.models:
            raise ValueError(
                f"default model {default!r} is not among the loaded ones: {', '.join(self.models)}"
            )
        self.default = default

    def get(self, name: str | None) -> LoadedModel | None:
        """The model called ``name`` (the default when None), or None when unknown."""
        return self.models.get(self.default if name is None else name)

    def describe(self) -> list[dict]:
        return [m.describe(m.name == self.default) for m in self.models.values()]

    def unknown(self, name: str | None) -> str:
        """The message for a request naming a model that is not loaded."""
        return f"no model named {name!r}; loaded models: {', '.join(self.models)}"

    def describe_one(self, name: str) -> dict | None:
        """The entry of the model called ``name``, or None when unknown."""
        loaded = self.models.get(name)
        return None if loaded is None else loaded.describe(name == self.default)
