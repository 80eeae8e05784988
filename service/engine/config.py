"""Engine settings: every default and every rule derived from them, written once.

:class:`EngineConfig` is what :class:`service.engine.Engine` runs with. The two commands read
it rather than repeating it: ``fcn serve``'s settings (:mod:`service.http.settings`, ``FCN_*``
variables) take their defaults and help from its fields, and ``fcn predict``'s engine flags
default to "not given", which means the field's default here. The rules the two share also
live here: which execution providers a ``--device`` means (:data:`DEVICES`), how many cores
this process may use (:func:`usable_cores`), how those cores are shared out among the images
run at once (:func:`resolve_intra_op_threads`), and the tile-overlap bound (checked by
:class:`EngineConfig` itself). ``tests/service/engine/test_config.py`` checks that the CLI,
the HTTP settings and this module agree; docs/configuration.md lists every setting.

Where the two paths want different values for a measured reason, both values are here, with
the reason: see :data:`BATCH_MEMORY_ARENA`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from service.backends import check_backend, check_precision

# Execution providers per --device choice (None: CUDA when this onnxruntime has it, else CPU).
DEVICES: dict[str, tuple[str, ...] | None] = {
    "auto": None,
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
}
DEFAULT_DEVICE = "auto"
DEVICE_HELP = "execution provider: auto (CUDA if present, else CPU), cpu or cuda"

# Images in the runtime at once by default (the concurrency of ``fcn serve`` and
# ``fcn predict`` alike). Two keep both cores of a 2-core machine busy while one image is in
# Python (decode, normalise, argmax, encode); bench/http_bench.py and bench/batch_bench.py
# tune it per machine.
DEFAULT_CONCURRENCY = 2

# ``fcn predict`` keeps ONNX Runtime's memory arena on, unlike ``fcn serve`` (the field's
# default, off). A batch sees a folder of images, mostly of a few sizes: allocating every
# tensor afresh slowed the default model's bare loop from 51 to 30 images/s, and the arena
# stayed flat over 2,000 images (bench/batch_bench.py). A service sees whatever sizes clients
# send, and the arena grows with each new input shape and never shrinks (+30% RSS over 300
# sizes on the test model, bench/reliability_bench.py), so there it is off.
BATCH_MEMORY_ARENA = True
# fcn predict's images waiting between two stages (decoded, waiting to be written): with the
# concurrency it bounds the images in memory at once (service.batch.runner).
BATCH_QUEUE_SIZE = 4
# fcn predict's defaults where they are not the engine's (fcn serve's are its settings').
BATCH_DEFAULTS: dict[str, Any] = {
    "concurrency": DEFAULT_CONCURRENCY,
    "memory_arena": BATCH_MEMORY_ARENA,
}

# ``fcn predict``'s defaults for georeferenced rasters (the geo path, service.geo), where they
# are not its image defaults. Larger windows see more context, so the blended mask agrees
# with one untiled run of the whole image on >= 99.5% of pixels (512/128: 98.6-98.8%); one
# window at a time on all the cores keeps the 64 MP run under 1 GB (two 1024-pixel windows at
# once: 1.14 GB). Measured by bench/seam_bench.py and bench/geo_bench.py (docs/gis.md, "Seams").
RASTER_DEFAULTS: dict[str, Any] = {
    "tile_size": 1024,
    "tile_overlap": 256,
    "concurrency": 1,
}


def _setting(default: Any, help: str) -> Any:
    """A dataclass field with its one-line help (read by the CLI, the HTTP settings, docs)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class EngineConfig:
    """How an :class:`~service.engine.Engine` runs: runtime, threads, limits, tiling.

    Each field's help (:func:`engine_help`) and default (:func:`engine_default`) are
    what ``fcn serve --help``, ``fcn predict --help`` and docs/configuration.md show.

    Raises:
        ValueError: an unknown backend/precision, a negative thread count, a size limit below
            1, or a tile overlap outside ``[0, tile_size / 2)``.
    """

    providers: tuple[str, ...] | None = _setting(
        None, "ONNX Runtime execution providers in priority order (None: CUDA if present, else CPU)"
    )
    # 0 in fcn serve / fcn predict: resolve_intra_op_threads shares the usable cores among the
    # images run at once; 0 given to the engine directly lets the runtime decide.
    intra_op_threads: int = _setting(
        0, "runtime threads per image run at once (0: the usable cores shared among them)"
    )
    # Benches measure with 1. ONNX Runtime runs operators one after another (sequential
    # execution mode), where this pool is not used; 1 makes sure none is created.
    inter_op_threads: int = _setting(1, "ONNX Runtime threads across independent operators")
    # 50 MP takes an 8000x6000 photo; the decoded pixels of one such image are 150 MB (RGB),
    # and a service or a batch holds one per image in flight.
    max_pixels: int = _setting(50_000_000, "largest width*height accepted (read from the header)")
    max_side: int = _setting(20_000, "largest width or height accepted")
    tile_size: int = _setting(512, "sliding-window side for large images (rounded up to stride)")
    tile_overlap: int = _setting(128, "overlap between neighbouring windows (< tile_size / 2)")
    tile_threshold: int = _setting(1024 * 1024, "images with more pixels than this are tiled")
    backend: str = _setting(
        "auto", "inference runtime: auto, ort (ONNX Runtime) or openvino (extra fcnseg[openvino])"
    )
    precision: str = _setting(
        "auto", "auto (the fastest path the export verified), fp32, bf16 or int8"
    )
    concurrency: int = _setting(1, "images run at once (OpenVINO compiles this many streams)")
    decision_cache: str | None = _setting(
        None,
        "file keeping auto's checks and timings per CPU and model; processes sharing it serve "
        "the same path (none: ~/.cache/fcnseg/speed-probe.json)",
    )
    # Off: see BATCH_MEMORY_ARENA for why fcn predict turns it on.
    memory_arena: bool = _setting(
        False, "ONNX Runtime CPU memory arena + memory patterns (grow with each input shape)"
    )

    def __post_init__(self) -> None:
        check_backend(self.backend)
        check_precision(self.precision)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        for name in ("intra_op_threads", "inter_op_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = ONNX Runtime default)")
        for name in ("max_pixels", "max_side", "tile_size", "tile_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # Windows must overlap less than half a tile, or a pixel would lie in three windows
        # along one axis and service.engine.tiling's blending weights would not cover the image.
        if not 0 <= self.tile_overlap < self.tile_size // 2:
            raise ValueError(
                f"tile_overlap must be in [0, tile_size / 2), got {self.tile_overlap} "
                f"for tile_size {self.tile_size}"
            )


def engine_default(name: str) -> Any:
    """The default of :class:`EngineConfig` field ``name``."""
    return _fields()[name].default


def engine_help(name: str) -> str:
    """The one-line help of :class:`EngineConfig` field ``name``."""
    return _fields()[name].metadata["help"]


def batch_default(name: str, raster: bool = False) -> Any:
    """``fcn predict``'s default for :class:`EngineConfig` field ``name`` (for images, or
    with ``raster`` for georeferenced rasters)."""
    if raster and name in RASTER_DEFAULTS:
        return RASTER_DEFAULTS[name]
    return BATCH_DEFAULTS.get(name, engine_default(name))


def _fields() -> dict[str, Any]:
    return {f.name: f for f in fields(EngineConfig)}


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a container's CPU limit.

    ``os.cpu_count()`` counts the host's cores; a container started with ``--cpuset-cpus``
    narrows the affinity, and one started with ``--cpus`` (Kubernetes ``limits.cpu``) sets a
    CFS quota instead, which only the cgroup files show. A fractional limit rounds up.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(cgroup_root)
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_limit(root: Path) -> int | None:
    """``ceil(quota / period)`` from cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_*``; None if unset."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000"
    except (OSError, ValueError):
        try:  # v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 for no limit
        return None
    return math.ceil(quota_us / period_us)


def resolve_intra_op_threads(intra_op_threads: int, concurrency: int) -> int:
    """Intra-op threads for each image run at once: as set, else the cores shared out.

    ``concurrency`` images run side by side (in fcn serve and fcn predict alike); giving each
    ``cores / concurrency`` threads keeps them from oversubscribing the cores.
    """
    if intra_op_threads:
        return intra_op_threads
    return max(1, usable_cores() // max(1, concurrency))
