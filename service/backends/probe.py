"""Which accuracy-verified path is fastest on *this* CPU: measured at load, cached per CPU.

Accuracy and speed are known in different places. ``fcn export`` records how accurate each
faster path is (mIoU against ONNX Runtime fp32 on validation images): that travels with the
model and holds on any x86 CPU. Speed does not travel: on a CPU with AMX, OpenVINO INT8 ran a
U-Net-r34 9x faster than ONNX Runtime fp32 and ONNX Runtime INT8 2.5x, while on an AVX2-only
CPU (no VNNI: int8 dot products take three instructions instead of one) the same INT8 file
gains much less, and which runtime wins differs (``bench/results/backends_bench.json`` and
``backends_bench_avx2.json``). A rule keyed on CPU flags would have to guess for every CPU
nobody has benchmarked, so ``precision="auto"`` measures instead: the verified candidates and
the fallback each run a few times on one random input of :data:`PROBE_SIDE` pixels a side,
interleaved, and a candidate is taken only if its median beats the fallback's by
:data:`service.backends.select.MIN_SPEEDUP`. The CPU flags still rule out what cannot pay off before
anything is measured (bf16 without native bf16, :mod:`service.backends.select`).

The medians are cached in ``$XDG_CACHE_HOME/fcnseg/speed-probe.json`` (``~/.cache`` when
unset), keyed by the model files (path, size, modification time), the CPU (model name and ISA
flags), the runtime versions and the thread settings, so a restart on the same machine does
not measure again. An unwritable cache only costs the measurement at every start.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np

from service.backends import Backend, load_backend
from service.backends.cpu import cpu_signature

logger = logging.getLogger(__name__)

PROBE_SIDE = 256  # input side for the timing runs (rounded up to the model's size multiple)
ROUNDS = 3  # timed runs per path, after one warm-up run each
CACHE_VERSION = 1


def cache_path() -> Path:
    """Where measured medians are kept: ``$XDG_CACHE_HOME/fcnseg/speed-probe.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fcnseg" / "speed-probe.json"


def _version(package: str) -> str | None:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None


def _file_id(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


class SpeedProbe:
    """Times candidate paths of one model on this CPU; keeps what it loaded for reuse.

    Args:
        config: the ``EngineConfig`` the paths are loaded with (threads matter for speed).
        cache: the cache file; ``None`` measures every time.
    """

    def __init__(self, config: Any, cache: Path | None = None) -> None:
        self.config = config
        self.cache = cache
        self.loaded: dict[str, Backend] = {}

    def _key(self, paths: Sequence[tuple[str, str, Path]], side: int) -> str:
        ident = {
            "version": CACHE_VERSION,
            "cpu": cpu_signature(),
            "runtimes": {p: _version(p) for p in ("onnxruntime", "openvino")},
            "threads": [self.config.intra_op_threads, self.config.inter_op_threads],
            "streams": self.config.concurrency,
            "side": side,
            "paths": [[b, p, *_file_id(f)] for b, p, f in paths],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    def _read_cache(self) -> dict[str, Any]:
        if self.cache is None:
            return {}
        try:
            data = json.loads(self.cache.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_cache(self, key: str, entry: dict[str, Any]) -> None:
        if self.cache is None:
            return
        data = self._read_cache()
        data[key] = entry
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            staged = self.cache.with_name(f".{self.cache.name}.{os.getpid()}")
            staged.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(staged, self.cache)
        except OSError as exc:  # a read-only home (containers): measure again next start
            logger.info("speed probe: not cached (%s)", exc)

    def measure(
        self, paths: Sequence[tuple[str, str, Path]], in_channels: int, size_multiple: int
    ) -> dict[str, float]:
        """Median milliseconds per ``"backend/precision"`` for ``(backend, precision, file)``.

        Paths are loaded with the probe's config and kept in :attr:`loaded` (by the same key),
        so the one chosen need not be loaded twice. A path that fails to load or to run is
        left out (and :func:`service.backends.select.choose_backend` falls back without it).
        """
        side = -(-PROBE_SIDE // size_multiple) * size_multiple
        key = self._key(paths, side)
        cached = self._read_cache().get(key)
        if isinstance(cached, dict) and isinstance(cached.get("ms"), dict):
            logger.info("speed probe (cached, %s): %s", cached.get("measured_at"), cached["ms"])
            return {k: float(v) for k, v in cached["ms"].items()}
        for backend, precision, path in paths:
            name = f"{backend}/{precision}"
            try:
                self.loaded[name] = load_backend(backend, path, precision, self.config)
            except Exception as exc:  # a candidate that cannot load here is simply not a candidate
                logger.warning("speed probe: %s did not load (%s); skipped", name, exc)
        batch = np.random.default_rng(0).standard_normal((1, in_channels, side, side), np.float32)
        for name, runner in list(self.loaded.items()):
            try:
                runner.run(batch)  # warm-up: first-run allocation and kernel compilation
            except Exception as exc:  # a path that cannot run here is not a candidate either
                logger.warning("speed probe: %s failed to run (%s); skipped", name, exc)
                del self.loaded[name]
        samples: dict[str, list[float]] = {name: [] for name in self.loaded}
        names = list(self.loaded)
        if not names:
            return {}
        for round_ in range(ROUNDS):
            # rotate the order so a burst of machine noise does not always hit the same path
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                start = time.perf_counter()
                self.loaded[name].run(batch)
                samples[name].append(1e3 * (time.perf_counter() - start))
        medians = {name: round(statistics.median(s), 2) for name, s in samples.items()}
        logger.info("speed probe at %dx%d: %s (median ms)", side, side, medians)
        measured_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if len(medians) == len(paths):  # a path that failed is tried again at the next start
            entry = {"ms": medians, "cpu": cpu_signature(), "measured_at": measured_at}
            self._write_cache(key, entry)
        return medians

    def take(self, backend: str, precision: str) -> Backend | None:
        """The loaded runner for a path, if the probe loaded it; every other one is dropped."""
        runner = self.loaded.pop(f"{backend}/{precision}", None)
        self.loaded.clear()
        return runner
