"""Reloading the served models without downtime (``POST /v1/models/reload``, SIGHUP).

The model specs and the models folder are resolved again; every model whose file's content
changed (or that is new) is loaded beside the one serving, checked (its metadata parses and
agrees with the graph; a warm-up run returns a mask of the input's size), and only then put in a
new :class:`ServedModels` that replaces the old one in a single assignment. A request holds the
:class:`LoadedModel` it started with until it is answered, so in-flight work finishes on that
version; the old engine is freed when the last such request lets go. A model that fails to load
or check keeps its old version serving and is reported. Models whose file is gone are dropped,
unless that would leave none or lose the configured default (then they stay, and are reported).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from service.engine import Engine, EngineConfig
from service.http.served_models import LoadedModel, ServedModels
from service.models import ModelSource, discover, file_sha256, model_sources

logger = logging.getLogger(__name__)

Status = Literal["unchanged", "reloaded", "added", "removed", "failed"]
# The warm-up image's side: odd, so the engine pads and crops it (a wrong size_multiple shows).
WARM_UP_SIDE = 33


@dataclass(frozen=True)
class Outcome:
    """What a reload did to one model."""

    name: str
    status: Status
    version: str | None  # the version serving after the reload (None: removed)
    previous_version: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


# Reloads load on this one thread: with glibc, each thread that allocates gets its own malloc
# arena, and loading on whichever thread asyncio.to_thread picks spreads sessions over several.
_LOADER = ThreadPoolExecutor(1, thread_name_prefix="fcn-reload")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once per process
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _release_memory() -> None:
    """Collect the replaced engines now and hand freed heap pages back to the OS (glibc)."""
    gc.collect()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:  # glibc only (not musl, not macOS)
        trim(0)


class ReloadFailed(Exception):
    """The model set could not be resolved (missing folder, bad or clashing names)."""


def warm_up(engine: Engine) -> None:
    """Run the engine once on a small grey image and check the mask it returns.

    Raises:
        ModelError: the graph returned logits of the wrong shape.
        ValueError: the mask is not the input's size.
    """
    side = WARM_UP_SIDE
    pixels = np.full((side, side, engine.metadata.in_channels), 128, dtype=np.uint8)
    mask = engine.predict(pixels, tiled=False)
    if mask.shape != (side, side):
        raise ValueError(f"warm-up mask has shape {mask.shape}, expected {(side, side)}")


def load_checked(source: ModelSource, config: EngineConfig) -> LoadedModel:
    """Load ``source``, warm it up, and hash the file it came from.

    Raises:
        ModelError / ValueError: it does not load or fails its check.
        RuntimeError: the file changed while it was being loaded (retry the reload).
    """
    before = file_sha256(source.path)
    engine = Engine.load(source.path, config)
    warm_up(engine)
    if file_sha256(source.path) != before:
        raise RuntimeError(f"{source.path} changed while it was loading; reload again")
    return LoadedModel(source.name, engine, before)


def _load_one(
    source: ModelSource, old: LoadedModel | None, config: EngineConfig
) -> tuple[LoadedModel | None, Outcome]:
    previous = old.version if old else None
    try:
        if old is not None and file_sha256(source.path) == old.sha256:
            return old, Outcome(source.name, "unchanged", previous, previous)
        new = load_checked(source, config)
    except Exception as exc:  # any failure keeps the old version: report it, never raise
        logger.error("reload of %s from %s failed: %s", source.name, source.path, exc)
        return old, Outcome(source.name, "failed", previous, previous, f"{exc}")
    status: Status = "added" if old is None else "reloaded"
    logger.info("model %s %s: version %s (was %s)", source.name, status, new.version, previous)
    return new, Outcome(source.name, status, new.version, previous)


def rebuild(
    current: ServedModels,
    specs: list[str],
    models_dir,
    config: EngineConfig,
    default: str | None,
) -> tuple[ServedModels, list[Outcome]]:
    """The registry to serve next and what changed (runs on a worker thread).

    Raises:
        ReloadFailed: the model set itself cannot be resolved; nothing changes.
    """
    try:
        sources = model_sources(specs, models_dir)
        if not specs and models_dir is not None and not discover(models_dir):
            # model_sources() falls back to the bundled demo model; a reload must not swap it in
            raise ReloadFailed(f"no *.onnx files in {models_dir}; keeping the models serving")
    except ValueError as exc:  # ModelLoadError is a ValueError too
        raise ReloadFailed(str(exc)) from None
    kept: list[LoadedModel] = []
    outcomes: list[Outcome] = []
    for source in sources:
        model, outcome = _load_one(source, current.models.get(source.name), config)
        outcomes.append(outcome)
        if model is not None:
            kept.append(model)
    names = {m.name for m in kept}
    for name, old in current.models.items():
        if name in names:
            continue
        if not kept or name == default:
            why = "the configured default model" if kept else "the only model left"
            outcomes.append(
                Outcome(
                    name, "failed", old.version, old.version, f"its file is gone; kept as {why}"
                )
            )
            kept.append(old)
        else:
            logger.info("model %s removed (its file is gone)", name)
            outcomes.append(Outcome(name, "removed", None, old.version))
    return ServedModels(kept, default), outcomes


async def reload_models(service) -> list[Outcome]:
    """Reload ``service``'s models (one reload at a time) and swap them in.

    Args:
        service: the app's :class:`service.http.state.ServiceState`.

    Raises:
        ReloadFailed: the model set cannot be resolved; the old models keep serving.
    """
    settings = service.settings
    async with service.reload_lock:
        start = time.perf_counter()
        current = service.models
        loop = asyncio.get_running_loop()
        registry, outcomes = await loop.run_in_executor(
            _LOADER,
            rebuild,
            current,
            settings.models,
            settings.models_dir,
            settings.engine_config(),
            settings.default_model,
        )
        service.models = registry  # one assignment: each request sees the old set or the new
        del current
        await loop.run_in_executor(_LOADER, _release_memory)
        for outcome in outcomes:
            service.metrics.reloads.labels(outcome.name, outcome.status).inc()
        logger.info(
            "reload took %.0f ms: %s",
            (time.perf_counter() - start) * 1000,
            ", ".join(f"{o.name} {o.status}" for o in outcomes),
        )
        return outcomes
