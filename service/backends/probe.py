"""Which accuracy-verified path is fastest on *this* CPU: measured at load, cached per CPU.

Accuracy and speed are known in different places. ``fcn export`` records how accurate each
faster path is (mIoU against ONNX Runtime fp32 on validation images): that travels with the
model and holds on any x86 CPU. Speed does not travel: on a CPU with AMX, OpenVINO INT8 ran a
U-Net-r34 9x faster than ONNX Runtime fp32 and ONNX Runtime INT8 2.5x, while on an AVX2-only
CPU (no VNNI: int8 dot products take three instructions instead of one) the same INT8 file
gains much less, and which runtime wins differs (``bench/results/backends_bench.json`` and
``backends_bench_avx2.json``). A rule keyed on CPU flags would have to guess for every CPU
nobody has benchmarked, so ``precision="auto"`` measures instead: the verified candidates and
the fallback each run :data:`ROUNDS` times on one random input at the serving tile size
(``EngineConfig.tile_size``), interleaved, and a candidate is taken only if its median beats
the fallback's by :data:`service.backends.select.MIN_SPEEDUP`. Before that, :meth:`SpeedProbe.
verify` runs each candidate on the model's reference crops (:mod:`service.backends.reference`)
and a path that fails there is not a candidate on this CPU. The CPU flags still rule out what cannot pay off before
anything is measured (bf16 without native bf16, :mod:`service.backends.select`).

One decision per CPU and model: the medians and the checks are cached in one small JSON file,
``EngineConfig.decision_cache`` (``FCN_DECISION_CACHE``, ``--decision-cache``) or else
``$XDG_CACHE_HOME/fcnseg/speed-probe.json`` (``~/.cache`` when
unset), keyed by the model files' contents (SHA-256), the CPU (model name and ISA flags), the
runtime versions and the thread settings. Every process that reads the same file (replicas
sharing a volume, ``fcn serve`` and ``fcn predict`` on one machine) makes the same choice and so
returns the same masks; a file lock makes concurrent first starts measure once. An unwritable
cache only costs the measurement at every start.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np

from service.backends import Backend, load_backend
from service.backends.cpu import cpu_signature
from service.backends.reference import REFERENCE_KEY, CheckResult, ReferenceSet, predict_crop
from service.engine.tiling import window_side

logger = logging.getLogger(__name__)

ROUNDS = 5  # timed runs per path, after one warm-up run each
CACHE_VERSION = 2


def cache_path(configured: str | os.PathLike | None = None) -> Path:
    """The decision cache: ``configured`` (``EngineConfig.decision_cache``), else
    ``$XDG_CACHE_HOME/fcnseg/speed-probe.json``."""
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fcnseg" / "speed-probe.json"


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None


def _file_id(path: Path) -> str:
    """The file's content hash: the same model anywhere (another path, a replica) shares it."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@contextlib.contextmanager
def _locked(cache: Path | None) -> Iterator[None]:
    """Hold an exclusive lock beside the cache, so concurrent starts measure only once."""
    if cache is None:
        yield
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle = open(cache.with_name(cache.name + ".lock"), "a")  # noqa: SIM115
    except OSError:  # read-only: no sharing, each process measures for itself
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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

    def _key(self, paths: Sequence[tuple[str, str, Path]], side: int, what: str = "ms") -> str:
        ident = {
            "version": CACHE_VERSION,
            "what": what,
            "cpu": cpu_signature(),
            "runtimes": {p: _version(p) for p in ("onnxruntime", "openvino")},
            "paths": [[b, p, _file_id(f)] for b, p, f in paths],
        }
        if what == "ms":  # speed depends on the threads; accuracy does not
            ident["threads"] = [self.config.intra_op_threads, self.config.inter_op_threads]
            ident["concurrency"] = self.config.concurrency
            ident["side"] = side
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

    def _load(self, paths: Sequence[tuple[str, str, Path]]) -> list[str]:
        """Load each path not loaded yet (kept in :attr:`loaded`); the names that loaded."""
        names = []
        for backend, precision, path in paths:
            name = f"{backend}/{precision}"
            if name not in self.loaded:
                try:
                    self.loaded[name] = load_backend(backend, path, precision, self.config)
                except Exception as exc:  # a path that cannot load here is not a candidate
                    logger.warning("speed probe: %s did not load (%s); skipped", name, exc)
                    continue
            names.append(name)
        return names

    def _cached(self, key: str) -> dict[str, Any] | None:
        entry = self._read_cache().get(key)
        return entry if isinstance(entry, dict) else None

    def measure(
        self, paths: Sequence[tuple[str, str, Path]], in_channels: int, size_multiple: int
    ) -> dict[str, float]:
        """Median milliseconds per ``"backend/precision"`` for ``(backend, precision, file)``.

        Timed at the serving tile size. Paths are loaded with the probe's config and kept in
        :attr:`loaded` (by the same key), so the one chosen need not be loaded twice. A path
        that fails to load or to run is left out (and
        :func:`service.backends.select.choose_backend` falls back without it).
        """
        side = window_side(self.config.tile_size, size_multiple)  # the engine's windows
        key = self._key(paths, side)
        with _locked(self.cache):
            cached = self._cached(key)
            if cached is not None and isinstance(cached.get("ms"), dict):
                logger.info("speed probe (cached, %s): %s", cached.get("measured_at"), cached["ms"])
                return {k: float(v) for k, v in cached["ms"].items()}
            medians = self._time(self._load(paths), in_channels, side)
            if len(medians) == len(paths):  # a path that failed is tried again next start
                self._write_cache(
                    key, {"ms": medians, "cpu": cpu_signature(), "measured_at": _now()}
                )
        return medians

    def _time(self, names: list[str], in_channels: int, side: int) -> dict[str, float]:
        batch = np.random.default_rng(0).standard_normal((1, in_channels, side, side), np.float32)
        for name in list(names):
            try:
                self.loaded[name].run(batch)  # warm-up: first-run allocation and compilation
            except Exception as exc:  # a path that cannot run here is not a candidate either
                logger.warning("speed probe: %s failed to run (%s); skipped", name, exc)
                del self.loaded[name]
                names.remove(name)
        samples: dict[str, list[float]] = {name: [] for name in names}
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
        return medians

    def verify(
        self, paths: Sequence[tuple[str, str, Path]], metadata: Any
    ) -> dict[str, CheckResult]:
        """Each path's :class:`CheckResult` on the model's reference crops, on this CPU.

        ``{}`` when the model carries no reference crops. A path that does not load or run is
        left out (it is then no candidate). Results are cached like the timings.
        """
        refset = ReferenceSet.from_value(metadata.extra.get(REFERENCE_KEY))
        if refset is None:
            return {}
        key = self._key(paths, 0, what="checks")
        with _locked(self.cache):
            cached = self._cached(key)
            if cached is not None and isinstance(cached.get("checks"), dict):
                return {k: CheckResult(**v) for k, v in cached["checks"].items()}
            results: dict[str, CheckResult] = {}
            for name in self._load(paths):
                runner = self.loaded[name]
                try:
                    results[name] = refset.check(
                        name,
                        lambda crop, r=runner: predict_crop(r, crop, metadata.mean, metadata.std),
                    )
                except Exception as exc:  # cannot run here: not a candidate
                    logger.warning("reference check: %s failed to run (%s); skipped", name, exc)
                    del self.loaded[name]
                    continue
                logger.info("reference check of %s here: %s", name, results[name].describe())
            if len(results) == len(paths):
                checks = {
                    name: {k: v for k, v in r.to_dict().items() if k != "passed"}
                    for name, r in results.items()
                }
                self._write_cache(
                    key, {"checks": checks, "cpu": cpu_signature(), "measured_at": _now()}
                )
        return results

    def take(self, backend: str, precision: str) -> Backend | None:
        """The loaded runner for a path, if the probe loaded it; every other one is dropped."""
        runner = self.loaded.pop(f"{backend}/{precision}", None)
        self.loaded.clear()
        return runner


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
