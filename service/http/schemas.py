"""Response bodies of the JSON routes, for the OpenAPI schema only.

The routes return plain dicts (so a field added to ``LoadedModel.describe`` is never filtered
out); these models document what those dicts hold, and the schemathesis test checks every
answer against them (extra fields are allowed).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    models: list[str]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arch: str
    classes: list[str]
    palette: list[list[int]]
    in_channels: int
    size_multiple: int
    version: str
    sha256: str
    default: bool


class ModelList(BaseModel):
    models: list[ModelInfo]


class ReloadOutcome(BaseModel):
    name: str
    status: Literal["unchanged", "reloaded", "added", "removed", "failed"]
    version: str | None
    previous_version: str | None
    error: str | None


class ReloadReport(BaseModel):
    ok: bool
    models: list[ReloadOutcome]
