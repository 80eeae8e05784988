"""Service settings: one pydantic-settings class read from ``FCN_*`` environment variables.

``fcn serve`` passes its command-line options as keyword arguments, which win over the
environment; everything else comes from ``FCN_<FIELD>`` (e.g. ``FCN_PORT=9000``,
``FCN_MODELS=roads=/m/roads.onnx,cells=/m/cells.onnx``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Execution providers per --device choice (None: CUDA when available, else CPU).
DEVICES: dict[str, tuple[str, ...] | None] = {
    "auto": None,
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    """Everything ``fcn serve`` can be told, each also an ``FCN_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="FCN_", extra="ignore", frozen=True)

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="model specs: PATH, NAME=PATH or 'default' (comma-separated in FCN_MODELS)",
    )
    models_dir: Path | None = Field(None, description="serve every *.onnx in this folder")
    default_model: str | None = Field(
        None, description="model used when a request names none ('default', else the first)"
    )
    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    api_key: SecretStr | None = Field(
        None, description="when set, /v1/* requires 'Authorization: Bearer KEY' or 'X-API-Key'"
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest request body")
    max_pixels: int = Field(50_000_000, ge=1, description="largest width*height accepted")
    max_side: int = Field(20_000, ge=1, description="largest width or height accepted")
    max_concurrency: int = Field(2, ge=1, description="inferences running at once (slots)")
    max_queue: int = Field(8, ge=0, description="requests waiting for a slot; more get 503")
    queue_timeout_s: float = Field(30.0, gt=0, description="longest wait for a slot before 503")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503")
    header_timeout_s: float = Field(
        10.0, gt=0, description="longest wait for a request's headers before 408 (slowloris)"
    )
    body_timeout_s: float = Field(
        15.0, gt=0, description="longest pause while a request body streams in before 408"
    )
    shutdown_grace_s: float = Field(
        30.0, gt=0, description="after SIGTERM, longest wait for in-flight requests"
    )
    drain_delay_s: float = Field(
        0.0, ge=0, description="after SIGTERM, keep answering 503/not-ready at least this long"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="execution provider")
    backend: Literal["auto", "ort", "openvino"] = Field(
        "auto", description="inference runtime: ONNX Runtime (ort) or OpenVINO"
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto", description="auto: the fastest path the export verified (see README)"
    )
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime threads per inference (0: cores / slots)"
    )
    inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime inter-op threads")
    memory_arena: bool = Field(
        False, description="ONNX Runtime CPU arena + memory patterns (grow with input shapes)"
    )
    tile_size: int = Field(512, ge=1, description="sliding-window side for large images")
    tile_overlap: int = Field(128, ge=0, description="overlap between windows")
    tile_threshold: int = Field(1024 * 1024, ge=1, description="tile images above this many pixels")
    web_dir: Path | None = Field(
        None, description="static web page folder served at / (default: the bundled page)"
    )
    access_log: bool = Field(True, description="log one line per request")
    replica_header: bool = Field(
        False, description="name this replica (its hostname) in an X-Replica response header"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_tiles(self) -> Settings:
        if not 0 <= self.tile_overlap < self.tile_size // 2:
            raise ValueError(
                f"tile_overlap must be in [0, tile_size / 2), got {self.tile_overlap} "
                f"for tile_size {self.tile_size}"
            )
        return self

    @property
    def providers(self) -> tuple[str, ...] | None:
        return DEVICES[self.device]

    @property
    def threads_per_inference(self) -> int:
        """ONNX Runtime intra-op threads: as set, or the cores shared out among the slots."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, usable_cores() // self.max_concurrency)


@lru_cache
def get_settings() -> Settings:
    """The process's settings from the environment (cached; tests pass their own)."""
    return Settings()
