"""The CPU record every bench JSON carries (bench/_cpu.py), and that every bench writes it."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from service.backends import cpu

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from _cpu import cpu_info, cpu_label  # noqa: E402

# Abridged /proc/cpuinfo of two real machines (first processor, then the second's first line).
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
stepping\t: 1
flags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2 sha_ni vaes vpclmulqdq

processor\t: 1
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
# Scripts under bench/ that write no results file of their own.
# Scripts in bench/ that write no results: the table renderer, a helper server, a data builder.
NOT_BENCHES = {"tables.py", "torch_endpoint.py", "make_geo_rasters.py"}


@pytest.mark.parametrize(
    ("text", "model", "ident", "bf16", "int8_dot", "label"),
    [
        (ZEN3, "AMD EPYC 7763 64-Core Processor", "AuthenticAMD 25/1/1", False, False, "(avx2)"),
        (
            SAPPHIRE_RAPIDS,
            "Intel(R) Xeon(R) Platinum 8480+",
            "GenuineIntel 6/143/8",
            True,
            True,
            "(avx2, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_tile, amx_bf16, amx_int8)",
        ),
    ],
)
def test_cpu_info_reads_model_flags_and_capabilities(
    monkeypatch, text, model, ident, bf16, int8_dot, label
) -> None:
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: cpu.parse_cpuinfo(text))
    info = json.loads(json.dumps(cpu_info()))  # what lands in the JSON
    assert info["model"] == model and info["id"] == ident
    assert info["native_bf16"] is bf16 and info["int8_dot_product"] is int8_dot
    assert info["flags"]["avx2"] is True and set(info["flags"]) == set(cpu.ISA_FLAGS)
    assert cpu_label(info) == f"{model} {label}"
    assert cpu.cpu_signature().startswith(f"{model} {ident} [avx2")


def test_unknown_cpu_claims_nothing(monkeypatch) -> None:
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {})
    info = cpu_info()
    assert not any(info["flags"].values()) and not info["native_bf16"] and info["id"] == ""


def bench_scripts() -> list[Path]:
    return [
        p
        for p in sorted((ROOT / "bench").glob("*.py"))
        if not p.name.startswith("_") and p.name not in NOT_BENCHES
    ]


@pytest.mark.parametrize("script", bench_scripts(), ids=lambda p: p.name)
def test_every_bench_records_the_cpu_in_its_results(script: Path) -> None:
    """A figure without the CPU is not comparable: each bench puts cpu_info() in its JSON."""
    tree = ast.parse(script.read_text())
    records = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value == "cpu" for k in node.keys)
        and any(isinstance(v, ast.Call | ast.Name) and "cpu" in ast.unparse(v) for v in node.values)
    ]
    assert records, f"{script.name} writes results without a 'cpu': cpu_info() entry"
