"""Backends and precisions: names, auto selection from recorded checks, CPU fallback, parity.

The selection tests simulate the CPU (its /proc/cpuinfo flags) and openvino's presence, and
fake the speed measurement where they test the choice rather than the timing, so they run
everywhere; the parity tests need the openvino runtime and skip cleanly without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service import backends
from service.backends import cpu as cpu_module
from service.backends import probe as probe_module
from service.backends import select
from service.backends.onnx_props import read_metadata_props
from service.engine import Engine, EngineConfig
from service.errors import ModelLoadError
from service.metadata import ModelMetadata

HAS_OPENVINO = backends.openvino_available()
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")


def checks(**deltas: float) -> dict:
    """A ``precision_checks`` value with the given ``backend/precision`` mIoU deltas."""
    results = {
        key.replace("__", "/"): {"miou": 80 + d, "miou_delta": d, "argmax_agreement": 0.99}
        for key, d in deltas.items()
    }
    return {
        "reference": {"backend": "ort", "precision": "fp32", "miou": 80.0},
        "results": results,
        "int8_file": "m.int8.onnx",
        "images": 6,
    }


# /proc/cpuinfo flags of real CPUs (the speed-relevant subset plus some common ones).
ZEN3_AVX2 = frozenset("sse4_2 avx fma f16c avx2 bmi2 sha_ni vaes vpclmulqdq".split())
ICELAKE_VNNI = ZEN3_AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
COOPERLAKE_BF16 = ICELAKE_VNNI | {"avx512_bf16"}
SAPPHIRE_RAPIDS_AMX = COOPERLAKE_BF16 | {"amx_tile", "amx_bf16", "amx_int8", "avx_vnni"}
NO_NATIVE_BF16 = {"zen3-avx2": ZEN3_AVX2, "icelake-vnni": ICELAKE_VNNI, "unknown": frozenset()}


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(bf16=..., openvino=..., flags=...)``: simulate the CPU's flags (an AMX one for
    ``bf16=True``, an AVX2-only one for ``False``, or ``flags`` as given) and openvino."""

    def fake(*, bf16: bool = False, openvino: bool = True, flags: frozenset | None = None):
        if flags is None:
            flags = SAPPHIRE_RAPIDS_AMX if bf16 else ZEN3_AVX2
        monkeypatch.setattr(cpu_module, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(select, "openvino_available", lambda: openvino)
        for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # no cap unless a test sets one
            monkeypatch.delenv(variable, raising=False)

    return fake


@pytest.fixture
def speeds(monkeypatch):
    """``speeds({"ort/fp32": 100, ...})``: what the engine's speed probe measures (ms); the
    paths it was asked about are collected in the returned list."""

    def fake(table: dict[str, float]) -> list[str]:
        asked: list[str] = []

        def measure(self, paths, in_channels, size_multiple):
            asked.extend(f"{b}/{p}" for b, p, _ in paths)
            return {k: v for k, v in table.items() if k in {f"{b}/{p}" for b, p, _ in paths}}

        monkeypatch.setattr(probe_module.SpeedProbe, "measure", measure)
        return asked

    return fake


@pytest.fixture
def model_pair(tmp_path: Path, make_model):
    """``model_pair(checks)``: ``m.onnx`` with those checks and a sibling ``m.int8.onnx``.

    The "INT8" file is the same small graph marked as quantized: selection only reads metadata.
    """

    def build(recorded: dict | None) -> Path:
        extra = {} if recorded is None else {select.CHECKS_KEY: recorded}
        src = make_model("pair_src", kind="conv", num_classes=4, metadata=extra)
        fp32 = shutil.copy(src, tmp_path / "m.onnx")
        make_model(
            "pair_q",
            kind="conv",
            num_classes=4,
            metadata={**extra, "quantization": {"format": "QDQ"}},
        )
        shutil.copy(src.with_name("pair_q.onnx"), tmp_path / "m.int8.onnx")
        return Path(fp32)

    return build


@pytest.mark.parametrize("field", ["backend", "precision"])
def test_bad_names_are_value_errors_naming_the_valid_ones(field: str) -> None:
    with pytest.raises(ValueError) as info:
        EngineConfig(**{field: "tensorrt"})
    valid = backends.BACKENDS if field == "backend" else backends.PRECISIONS
    assert "tensorrt" in str(info.value)
    assert all(name in str(info.value) for name in valid)


def test_metadata_reader_matches_onnxruntime(conv_model: Path, tmp_path: Path) -> None:
    session = ort.InferenceSession(str(conv_model), providers=["CPUExecutionProvider"])
    assert read_metadata_props(conv_model) == session.get_modelmeta().custom_metadata_map
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    assert read_metadata_props(tmp_path / "junk.onnx") is None
    assert read_metadata_props(tmp_path / "missing.onnx") is None


def test_without_recorded_checks_auto_is_todays_path(cpu, model_pair) -> None:
    cpu(bf16=True)
    fp32 = model_pair(None)
    choice = select.choose_backend(
        fp32, read_metadata_props(fp32), backend="auto", precision="auto"
    )
    assert (choice.backend, choice.precision, choice.path) == ("ort", "fp32", fp32)


@pytest.mark.parametrize(
    ("bf16", "openvino", "deltas", "expected"),
    [
        # Fastest verified first: openvino int8, then openvino bf16, then ort int8.
        (
            True,
            True,
            {"openvino__int8": -0.1, "openvino__bf16": 0.0, "ort__int8": 0.0},
            ("openvino", "int8"),
        ),
        (
            True,
            True,
            {"openvino__int8": -0.6, "openvino__bf16": -0.5, "ort__int8": 0.0},
            ("openvino", "bf16"),
        ),
        (
            True,
            True,
            {"openvino__int8": -2.0, "openvino__bf16": -0.51, "ort__int8": 0.3},
            ("ort", "int8"),
        ),
        (
            True,
            True,
            {"openvino__int8": -2.0, "openvino__bf16": -0.9, "ort__int8": -0.7},
            ("ort", "fp32"),
        ),
        # No native bf16: the bf16 record is ignored, no error.
        (False, True, {"openvino__bf16": 0.0}, ("ort", "fp32")),
        (False, True, {"openvino__bf16": 0.0, "ort__int8": -0.2}, ("ort", "int8")),
        # No openvino installed: its records are ignored.
        (True, False, {"openvino__int8": 0.0, "openvino__bf16": 0.0}, ("ort", "fp32")),
    ],
)
def test_auto_takes_the_fastest_path_verified_within_half_a_point(
    cpu, model_pair, bf16, openvino, deltas, expected
) -> None:
    cpu(bf16=bf16, openvino=openvino)
    fp32 = model_pair(checks(**deltas))
    choice = select.choose_backend(
        fp32, read_metadata_props(fp32), backend="auto", precision="auto"
    )
    assert (choice.backend, choice.precision) == expected
    assert choice.path.name == ("m.int8.onnx" if expected[1] == "int8" else "m.onnx")


def test_auto_ignores_an_int8_record_without_the_int8_file(cpu, model_pair) -> None:
    cpu(bf16=False)
    fp32 = model_pair(checks(ort__int8=0.0))
    fp32.with_name("m.int8.onnx").unlink()
    choice = select.choose_backend(fp32, read_metadata_props(fp32), backend="ort", precision="auto")
    assert (choice.backend, choice.precision) == ("ort", "fp32")


def test_gpu_provider_keeps_auto_on_ort_fp32(cpu, model_pair) -> None:
    cpu(bf16=True)
    fp32 = model_pair(checks(openvino__int8=0.0, ort__int8=0.0))
    choice = select.choose_backend(
        fp32,
        read_metadata_props(fp32),
        backend="auto",
        precision="auto",
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    )
    assert (choice.backend, choice.precision) == ("ort", "fp32")


def test_explicit_requests_that_cannot_run_are_errors(cpu, model_pair) -> None:
    fp32 = model_pair(None)
    props = read_metadata_props(fp32)
    cpu(bf16=False)
    with pytest.raises(ValueError, match="native bf16"):
        select.choose_backend(fp32, props, backend="auto", precision="bf16")
    cpu(bf16=True)
    with pytest.raises(ValueError, match="openvino backend only"):
        select.choose_backend(fp32, props, backend="ort", precision="bf16")
    q = fp32.with_name("m.int8.onnx")
    with pytest.raises(ValueError, match="INT8"):
        select.choose_backend(q, read_metadata_props(q), backend="auto", precision="fp32")
    q.unlink()
    with pytest.raises(ModelLoadError, match="m.int8.onnx"):
        select.choose_backend(fp32, props, backend="ort", precision="int8")
    cpu(bf16=True, openvino=False)
    with pytest.raises(ModelLoadError, match="fcnseg\\[openvino\\]"):
        select.choose_backend(fp32, props, backend="openvino", precision="fp32")


def test_engine_falls_back_without_bf16_and_still_segments(cpu, model_pair) -> None:
    """A model verified for openvino bf16, on a CPU without bf16: today's path, no error."""
    cpu(bf16=False)
    fp32 = model_pair(checks(openvino__bf16=0.0))
    engine = Engine.load(fp32)
    assert (engine.backend_name, engine.precision) == ("ort", "fp32")
    assert engine.providers[0] == "CPUExecutionProvider"
    mask = engine.predict(np.zeros((37, 41, 3), dtype=np.uint8))
    assert mask.shape == (37, 41)


@needs_openvino
def test_engine_serves_verified_bf16_on_a_bf16_cpu(cpu, model_pair, speeds) -> None:
    cpu(bf16=True)
    speeds({"openvino/bf16": 20.0, "ort/fp32": 100.0})  # as on an AMX CPU
    engine = Engine.load(model_pair(checks(openvino__bf16=-0.1)))
    assert (engine.backend_name, engine.precision) == ("openvino", "bf16")
    assert engine.providers == ["openvino:CPU (bf16)"]
    assert engine.choice is not None and "verified" in engine.choice.reason


@pytest.mark.parametrize("flags", NO_NATIVE_BF16.values(), ids=NO_NATIVE_BF16.keys())
def test_auto_never_chooses_bf16_on_a_cpu_without_native_bf16(
    cpu, model_pair, speeds, flags
) -> None:
    """Even when bf16 is recorded as exact and a (wrong) measurement calls it the fastest."""
    cpu(flags=flags)
    asked = speeds({"openvino/bf16": 5.0, "openvino/int8": 50.0, "ort/fp32": 100.0})
    fp32 = model_pair(checks(openvino__bf16=0.0))
    engine = Engine.load(fp32)
    assert (engine.backend_name, engine.precision) == ("ort", "fp32")
    assert asked == []  # bf16 was never a candidate, so nothing was measured
    # with a verified INT8 beside it, bf16 is still not even measured
    fp32 = model_pair(checks(openvino__bf16=0.0, openvino__int8=-0.1))
    engine = Engine.load(fp32)
    assert "openvino/bf16" not in asked
    assert (engine.backend_name, engine.precision) == ("openvino", "int8")
    with pytest.raises(ValueError, match="native bf16"):
        Engine.load(fp32, EngineConfig(precision="bf16"))


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
@pytest.mark.parametrize("cap", ["AVX2", "avx512_core_vnni"])
def test_an_isa_cap_below_bf16_takes_bf16_away(
    cpu, model_pair, speeds, monkeypatch, variable, cap
) -> None:
    """A bf16 CPU capped with ONEDNN_MAX_CPU_ISA has no bf16 kernels (OpenVINO's bf16 compile
    fails there): bf16 is neither measured nor served, and the cap is in the signature."""
    from training.loop.epoch import cpu_has_native_bf16

    cpu(flags=SAPPHIRE_RAPIDS_AMX)
    assert backends.cpu_has_bf16() and cpu_has_native_bf16()
    uncapped = cpu_module.cpu_signature()
    monkeypatch.setenv(variable, cap)
    assert not backends.cpu_has_bf16() and not cpu_has_native_bf16()
    assert cpu_module.usable_flags() <= SAPPHIRE_RAPIDS_AMX - {"avx512_bf16", "amx_bf16"}
    assert cpu_module.cpu_signature() != uncapped and cap.upper() in cpu_module.cpu_signature()
    asked = speeds({"openvino/bf16": 5.0, "ort/fp32": 100.0})
    engine = Engine.load(model_pair(checks(openvino__bf16=0.0)))
    assert (engine.backend_name, engine.precision) == ("ort", "fp32") and asked == []
    # a cap at or above bf16 leaves it (and an uncapped value changes nothing)
    for value in ("AVX512_CORE_BF16", "ALL"):
        monkeypatch.setenv(variable, value)
        assert backends.cpu_has_bf16()
    assert cpu_module.cpu_has_int8_dot()


@pytest.mark.parametrize(
    "flags", [COOPERLAKE_BF16, SAPPHIRE_RAPIDS_AMX], ids=["cooperlake", "sapphire-rapids"]
)
def test_auto_measures_bf16_where_the_cpu_has_it(cpu, model_pair, flags) -> None:
    cpu(flags=flags)
    asked = []

    def measure(paths, in_channels, size_multiple):
        asked.extend(f"{b}/{p}" for b, p, _ in paths)
        return {"openvino/bf16": 20.0, "ort/fp32": 100.0}

    fp32 = model_pair(checks(openvino__bf16=0.0))
    props = read_metadata_props(fp32)
    choice = select.choose_backend(fp32, props, backend="auto", precision="auto", measure=measure)
    assert (choice.backend, choice.precision) == ("openvino", "bf16")
    assert asked == ["openvino/bf16", "ort/fp32"] and "5.0x" in choice.reason


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # INT8 clearly faster here: taken (the fastest of the verified ones)
        ({"openvino/int8": 40.0, "ort/int8": 70.0, "ort/fp32": 100.0}, ("openvino", "int8")),
        ({"openvino/int8": 95.0, "ort/int8": 60.0, "ort/fp32": 100.0}, ("ort", "int8")),
        # INT8 only a little faster (< 1.1x), or slower: fp32 stays
        ({"openvino/int8": 95.0, "ort/int8": 98.0, "ort/fp32": 100.0}, ("ort", "fp32")),
        ({"openvino/int8": 130.0, "ort/int8": 180.0, "ort/fp32": 100.0}, ("ort", "fp32")),
        # a candidate that did not load is not measured; the other one still counts
        ({"ort/int8": 50.0, "ort/fp32": 100.0}, ("ort", "int8")),
    ],
)
def test_auto_serves_int8_only_where_measured_faster(
    cpu, model_pair, speeds, table, expected
) -> None:
    cpu(flags=ZEN3_AVX2)
    speeds(table)
    engine = Engine.load(model_pair(checks(openvino__int8=-0.2, ort__int8=-0.1)))
    assert (engine.backend_name, engine.precision) == expected
    assert engine.choice is not None and "measured" in engine.choice.reason


def test_speed_probe_measures_once_per_model_and_cpu(cpu, model_pair, tmp_path) -> None:
    """The real probe: medians of real runs, cached on disk, re-measured when the file changes."""
    cpu(flags=ZEN3_AVX2, openvino=False)
    fp32 = model_pair(checks(ort__int8=0.0))
    paths = [("ort", "int8", fp32.with_name("m.int8.onnx")), ("ort", "fp32", fp32)]
    cache = tmp_path / "cache" / "speed-probe.json"
    config = EngineConfig(intra_op_threads=1)
    first = probe_module.SpeedProbe(config, cache)
    ms = first.measure(paths, 3, 1)
    assert set(ms) == {"ort/int8", "ort/fp32"} and all(v > 0 for v in ms.values())
    assert set(first.loaded) == {"ort/int8", "ort/fp32"}
    assert first.take("ort", "fp32").precision == "fp32" and first.loaded == {}
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["ms"] == ms and entry["cpu"] == cpu_module.cpu_signature()
    again = probe_module.SpeedProbe(config, cache)
    assert again.measure(paths, 3, 1) == ms and again.loaded == {}  # from the cache
    cpu(flags=ICELAKE_VNNI, openvino=False)  # another CPU: measured again
    other = probe_module.SpeedProbe(config, cache)
    other.measure(paths, 3, 1)
    assert len(other.loaded) == 2 and len(json.loads(cache.read_text())) == 2
    # The same files elsewhere (a replica's volume, another checkout): the same decision.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copies = []
    for backend, precision, path in paths:
        shutil.copy(path, elsewhere / path.name)
        copies.append((backend, precision, elsewhere / path.name))
    replica = probe_module.SpeedProbe(config, cache)
    assert replica.measure(copies, 3, 1) == other.measure(paths, 3, 1) and replica.loaded == {}
    proto = onnx.load(str(fp32))  # a replaced model file (new content): measured again
    proto.metadata_props.add(key="retrained", value="1")
    onnx.save(proto, str(fp32))
    assert len(probe_module.SpeedProbe(config, cache).measure(paths, 3, 1)) == 2
    assert len(json.loads(cache.read_text())) == 3


def test_speed_probe_leaves_out_a_path_that_cannot_load(cpu, model_pair, tmp_path) -> None:
    cpu(flags=ZEN3_AVX2, openvino=False)
    fp32 = model_pair(None)
    broken = tmp_path / "broken.int8.onnx"
    broken.write_bytes(b"not a model")
    cache = tmp_path / "speed-probe.json"
    probe = probe_module.SpeedProbe(EngineConfig(intra_op_threads=1), cache)
    ms = probe.measure([("ort", "int8", broken), ("ort", "fp32", fp32)], 3, 1)
    assert set(ms) == {"ort/fp32"}
    assert not cache.exists()  # an incomplete measurement is not kept: tried again next start
    choice = select._fastest(
        [select.Choice("ort", "int8", broken, "verified")],
        select.Choice("ort", "fp32", fp32, "fallback"),
        lambda paths, c, m: ms,
        ModelMetadata.from_props(read_metadata_props(fp32)),
    )
    assert (choice.backend, choice.precision) == ("ort", "fp32")


def test_engine_load_probes_for_real_and_says_why(cpu, model_pair) -> None:
    cpu(flags=ZEN3_AVX2, openvino=False)
    engine = Engine.load(model_pair(checks(ort__int8=0.0)))
    assert engine.choice is not None and "measured" in engine.choice.reason
    assert (engine.backend_name, engine.precision) in {("ort", "int8"), ("ort", "fp32")}
    assert probe_module.cache_path().is_file()  # the session's cache folder (tests/conftest.py)
    assert engine.predict(np.zeros((9, 11, 3), np.uint8)).shape == (9, 11)


@needs_openvino
@pytest.mark.parametrize("kind", ["conv", "strided"])
def test_openvino_fp32_masks_agree_with_onnxruntime(make_model, kind: str) -> None:
    path = make_model(
        f"parity_{kind}", kind=kind, num_classes=4, size_multiple=4 if kind == "strided" else 1
    )
    cfg = {"tile_threshold": 256 * 256, "tile_size": 128, "tile_overlap": 32}
    ref = Engine.load(path, EngineConfig(backend="ort", precision="fp32", **cfg))
    ov = Engine.load(path, EngineConfig(backend="openvino", precision="fp32", **cfg))
    assert (ov.backend_name, ov.precision) == ("openvino", "fp32")
    assert ov.metadata == ref.metadata
    rng = np.random.default_rng(1)
    for height, width in ((1, 1), (37, 59), (300, 301)):  # the last one is tiled
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        a, b = ref.logits(pixels), ov.logits(pixels)
        assert np.abs(a - b).max() <= 1e-3 * max(1.0, float(np.abs(a).max()))
        assert (ref.predict(pixels) == ov.predict(pixels)).mean() >= 0.9999


@needs_openvino
def test_openvino_metadata_errors_are_typed(make_model) -> None:
    from service.errors import MetadataError

    path = make_model("ov_no_classes", kind="conv", drop_keys=("classes",))
    with pytest.raises(MetadataError, match="classes"):
        Engine.load(path, EngineConfig(backend="openvino", precision="fp32"))
    with pytest.raises(ModelLoadError, match="not found"):
        Engine.load(path.with_name("nope.onnx"), EngineConfig(backend="openvino"))


@needs_openvino
def test_openvino_compiles_one_stream_per_concurrent_caller(make_model) -> None:
    """``concurrency`` = 2 (fcn predict's default): two requests run at once."""
    from concurrent.futures import ThreadPoolExecutor

    path = make_model("ov_streams", kind="conv", num_classes=4)
    pixels = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), np.uint8) for i in range(6)]
    one = Engine.load(path, EngineConfig(backend="openvino", precision="fp32"))
    two = Engine.load(
        path, EngineConfig(backend="openvino", precision="fp32", concurrency=2, intra_op_threads=1)
    )
    assert int(one.backend.compiled.get_property("NUM_STREAMS")) == 1
    assert int(two.backend.compiled.get_property("NUM_STREAMS")) == 2
    assert int(two.backend.compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(two.predict, pixels))
    for image, mask in zip(pixels, together, strict=True):
        np.testing.assert_array_equal(mask, one.predict(image))
    with pytest.raises(ValueError, match="concurrency"):
        EngineConfig(concurrency=0)


def test_checks_key_round_trips_as_json(model_pair) -> None:
    recorded = checks(ort__int8=-0.25)
    fp32 = model_pair(recorded)
    assert select.parse_checks(read_metadata_props(fp32)) == json.loads(json.dumps(recorded))
    assert select.verified(recorded, "ort", "int8")
    assert not select.verified(checks(ort__int8=-0.5001), "ort", "int8")


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_memory_stays_flat_over_many_image_sizes(precision: str) -> None:
    # Two per-shape caches grow with new sizes: OpenVINO's runtime cache (unbounded it took the
    # bundled model 228 -> 597 MB over 160 sizes at fp32) and oneDNN's primitive cache (bf16
    # kernels: +5% from size 40 to 120 with its default 1024 primitives, +0.4% with the bound).
    # Measured in a fresh process, as oneDNN reads its cache size once per process.
    if precision == "bf16" and not backends.cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AMX / AVX512-BF16)")
    code = f"""
import numpy as np
import onnx
from service.engine import Engine, EngineConfig
from service.models import bundled_model_path
# The fp32 demo model: the default is an INT8 file, which has no fp32 or bf16 path.
engine = Engine.load(
    bundled_model_path("demo"), EngineConfig(backend="openvino", precision="{precision}")
)
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
rng = np.random.default_rng(0)
# Distinct padded shapes (the engine pads to multiples of 32), so each is new to OpenVINO.
sizes = [(32 * h, 32 * w) for h in range(2, 17) for w in range(2, 17)]
rng.shuffle(sizes)
sizes = sizes[:120]
for i, (h, w) in enumerate(sizes):
    engine.predict(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if i == 39:
        warm = rss()
print(warm, rss())
"""
    env = {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" not in k}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warm, end = map(float, result.stdout.split())
    assert end <= warm * 1.03, f"RSS grew from {warm:.0f} MB to {end:.0f} MB over 80 new sizes"


@pytest.mark.parametrize(
    "preset", [{}, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8"}, {"DNNL_PRIMITIVE_CACHE_CAPACITY": "8"}]
)
def test_primitive_cache_is_bounded_unless_the_user_sized_it(monkeypatch, preset: dict) -> None:
    from service.backends import openvino as ov_backend

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    ov_backend.bound_primitive_cache()
    expected = preset or {
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ov_backend.PRIMITIVE_CACHE_CAPACITY)
    }
    assert {k: v for k, v in os.environ.items() if "PRIMITIVE_CACHE_CAPACITY" in k} == expected
