"""Service settings: one pydantic-settings class read from ``FCN_*`` environment variables.

``fcn serve`` passes its command-line options as keyword arguments, which win over the
environment; everything else comes from ``FCN_<FIELD>`` (e.g. ``FCN_PORT=9000``,
``FCN_MODELS=roads=/m/roads.onnx,cells=/m/cells.onnx``).
"""

from __future__ import annotations

from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.backends import BACKENDS, PRECISIONS
from service.engine.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DEVICE,
    DEVICE_HELP,
    DEVICES,
    EngineConfig,
    engine_default,
    engine_help,
    resolve_intra_op_threads,
)
from service.renamed import warn_renamed_env


def engine_field(name: str, **constraints: Any) -> Any:
    """A settings field whose default and help are :class:`EngineConfig` field ``name``'s."""
    return Field(engine_default(name), description=engine_help(name), **constraints)


class Settings(BaseSettings):
    """Everything ``fcn serve`` can be told, each also an ``FCN_<NAME>`` variable."""

    model_config = SettingsConfigDict(
        env_prefix="FCN_", extra="ignore", frozen=True, populate_by_name=True
    )

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
    max_pixels: int = engine_field("max_pixels")
    max_side: int = engine_field("max_side")
    # FCN_MAX_CONCURRENCY is the old name of FCN_CONCURRENCY (service.renamed warns);
    # an alias replaces the FCN_ prefix, so both variables are spelt out (matched ignoring case).
    concurrency: int = Field(
        DEFAULT_CONCURRENCY,
        ge=1,
        description=engine_help("concurrency"),
        validation_alias=AliasChoices("fcn_concurrency", "fcn_max_concurrency"),
    )
    max_queue: int = Field(
        8, ge=0, description="requests waiting for an inference to finish; more get 503"
    )
    queue_timeout_s: float = Field(30.0, gt=0, description="longest wait in the queue before 503")
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
    device: Literal[tuple(DEVICES)] = Field(DEFAULT_DEVICE, description=DEVICE_HELP)
    backend: Literal[BACKENDS] = engine_field("backend")
    precision: Literal[PRECISIONS] = engine_field("precision")
    intra_op_threads: int = engine_field("intra_op_threads")
    inter_op_threads: int = engine_field("inter_op_threads")
    memory_arena: bool = engine_field("memory_arena")
    tile_size: int = engine_field("tile_size")
    tile_overlap: int = engine_field("tile_overlap")
    tile_threshold: int = engine_field("tile_threshold")
    decision_cache: str | None = engine_field("decision_cache")
    web_dir: Path | None = Field(
        None, description="static web page folder served at / (default: the bundled page)"
    )
    access_log: bool = Field(True, description="log one line per request")
    replica_header: bool = Field(
        False, description="name this replica (its hostname) in an X-Replica response header"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # The job API (/v1/jobs, docs/gis-vectors.md): rasters too big for one request.
    jobs_dir: Path | None = Field(
        None,
        description="folder of rasters the job API may read (POST /v1/jobs with a path under "
        "it) and where jobs keep their files (.jobs/); unset: the job API answers 503",
    )
    jobs_max_upload_bytes: int = Field(
        4 * 1024**3, ge=1, description="largest raster uploaded as a job's body (413 above)"
    )
    # Label Studio ML backend (/label-studio/*, docs/label-studio.md): where task images live.
    label_studio_url: str | None = Field(
        None,
        pattern=r"^https?://[^/\s]+",
        description="Label Studio's address as this service reaches it; task image paths "
        "(/data/upload/..., /data/local-files/...) are read from it",
    )
    label_studio_token: SecretStr | None = Field(
        None, description="Label Studio API token (legacy token), sent to FCN_LABEL_STUDIO_URL only"
    )
    label_studio_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="more hosts (name or name:port, comma-separated) task image URLs may "
        "point at; '*' allows any (not recommended: the service would fetch any URL it is sent)",
    )
    label_studio_timeout_s: float = Field(30.0, gt=0, description="longest fetch of one task image")
    # The labelling loop (service/loop, docs/label-studio.md): annotations fine-tune a model.
    label_studio_train: bool = Field(
        False,
        description="fine-tune on Label Studio's annotations when its webhooks say so, and "
        "promote the result only if it passes the held-out gate (needs FCN_MODELS_DIR, "
        "FCN_LABEL_STUDIO_URL and FCN_LABEL_STUDIO_TOKEN)",
    )
    train_model: str = Field("default", description="the served model the loop fine-tunes")
    train_after_annotations: int = Field(
        10, ge=1, description="train once this many annotations arrived since the last run"
    )
    train_after_minutes: float = Field(
        30.0, gt=0, description="...or once this long passed since the first unused annotation"
    )
    train_minutes: float = Field(10.0, gt=0, description="each fine-tune's time budget")
    train_heldout_share: float = Field(
        0.2, gt=0, lt=1, description="share of annotated tasks kept for the gate (by task id)"
    )
    train_gate_margin: float = Field(
        0.005, ge=0, description="mIoU the candidate must gain on the held-out tasks"
    )

    @field_validator("models", "label_studio_allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("label_studio_url", "label_studio_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # FCN_LABEL_STUDIO_URL= (set but empty, as compose files pass unset variables) = unset
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="before")
    @classmethod
    def _warn_renamed(cls, data: Any) -> Any:
        warn_renamed_env()
        return data

    @model_validator(mode="after")
    def _check_engine(self) -> Settings:
        self.engine_config()  # EngineConfig checks its own fields (ranges, tile overlap)
        return self

    @property
    def providers(self) -> tuple[str, ...] | None:
        return DEVICES[self.device]

    @property
    def resolved_intra_op_threads(self) -> int:
        """Intra-op threads per inference: as set, or the usable cores shared out."""
        return resolve_intra_op_threads(self.intra_op_threads, self.concurrency)

    def engine_config(self) -> EngineConfig:
        """The engine settings these map onto, with the cores shared out."""
        names = [f.name for f in fields(EngineConfig) if f.name in type(self).model_fields]
        derived = {
            "providers": self.providers,
            "intra_op_threads": self.resolved_intra_op_threads,
        }
        return EngineConfig(**{**{name: getattr(self, name) for name in names}, **derived})


@lru_cache
def get_settings() -> Settings:
    """The process's settings from the environment (cached; tests pass their own)."""
    return Settings()
