"""What this CPU offers the backends: its model name and the ISA flags that decide speed.

Read once from ``/proc/cpuinfo`` (Linux; elsewhere no flags are known, so nothing is claimed).
Tests simulate other CPUs by patching :func:`cpu_flags`; everything below derives from it,
after the oneDNN ISA cap (``ONEDNN_MAX_CPU_ISA``) where one is set (:func:`usable_flags`).

The flags that matter for serving:

* ``avx512_bf16`` / ``amx_bf16``: native bf16 arithmetic. Without either there is no bf16
  speed to gain: OpenVINO's CPU plugin lists no BF16 capability and runs a bf16 request in
  fp32 (OpenVINO 2026.4 on an AVX2 CPU: the compiled hint reads back ``float32``); other
  software emulates bf16 by converting around fp32 arithmetic, which only adds work.
* ``avx512_vnni`` / ``avx_vnni`` / ``amx_int8``: one-instruction int8 dot products. Without
  them (AVX2 only, e.g. AMD Zen 3) int8 kernels still exist (u8s8 through ``vpmaddubsw``), so
  whether INT8 beats fp32 there is measured, not assumed (:mod:`service.backends.probe`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# The flags bench JSONs record and the selection reads, in /proc/cpuinfo spelling.
ISA_FLAGS: tuple[str, ...] = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's ``key: value`` lines of a ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough: all cores are alike here
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


@functools.cache
def _cpuinfo() -> dict[str, str]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: nothing known, so nothing claimed
        return {}


def cpu_flags() -> frozenset[str]:
    """This CPU's ISA flags (``/proc/cpuinfo`` spelling); empty when unknown."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    import platform

    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id() -> str:
    """Vendor, family, model and stepping (``AuthenticAMD 25/1/1``: Zen 3), where the model
    name is generic (virtual machines often report only ``AMD EPYC``); empty when unknown."""
    info = _cpuinfo()
    parts = [info.get(k) for k in ("cpu family", "model", "stepping")]
    if not info.get("vendor_id") or not all(parts):
        return ""
    return f"{info['vendor_id']} {'/'.join(parts)}"


# ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) caps the instruction set of
# oneDNN's kernels, which torch's CPU convolutions and OpenVINO's CPU plugin both use: a bf16
# CPU capped at ``AVX2`` has no bf16 kernels left (OpenVINO then fails to compile a bf16
# model: "Supported primitive descriptors list is empty"). Value -> the flags the cap takes
# away; a value not listed (``ALL``, ``DEFAULT``, AMX levels, unknown spellings) removes none.
# ONNX Runtime's own MLAS kernels ignore the variable; the cap is applied to every decision
# anyway so that one setting makes this process behave like the smaller CPU throughout.
_ABOVE_AVX2 = frozenset(ISA_FLAGS) - {"avx2"}
_ISA_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset(ISA_FLAGS),
    "AVX": frozenset(ISA_FLAGS),
    "AVX2": _ABOVE_AVX2,
    "AVX2_VNNI": _ABOVE_AVX2 - {"avx_vnni"},
    "AVX2_VNNI_2": _ABOVE_AVX2 - {"avx_vnni"},
    "AVX512_CORE": _ABOVE_AVX2 - {"avx512f"},
    "AVX512_CORE_VNNI": _ABOVE_AVX2 - {"avx512f", "avx512_vnni", "avx_vnni"},
    "AVX512_CORE_BF16": frozenset({"amx_tile", "amx_bf16", "amx_int8"}),
    "AVX10_1_512": frozenset({"amx_tile", "amx_bf16", "amx_int8"}),
    "AVX512_CORE_FP16": frozenset({"amx_tile", "amx_bf16", "amx_int8"}),
}


def isa_cap() -> str | None:
    """The oneDNN ISA cap set in the environment (upper-case), or ``None``."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def usable_flags() -> frozenset[str]:
    """:func:`cpu_flags` less what :func:`isa_cap` takes away: the kernels that can run."""
    cap = isa_cap()
    return cpu_flags() - _ISA_CAPS.get(cap, frozenset()) if cap else cpu_flags()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), where bf16 pays off,
    and no oneDNN ISA cap forbids those kernels."""
    return bool(usable_flags() & BF16_FLAGS)


def cpu_has_int8_dot() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX-INT8), not capped."""
    return bool(usable_flags() & INT8_DOT_FLAGS)


def cpu_signature() -> str:
    """Model name and the speed-relevant flags that can run (cap applied): what a cached
    speed measurement is valid for."""
    flags = usable_flags()
    cap = f" cap={isa_cap()}" if isa_cap() else ""
    return f"{cpu_model()} {cpu_id()} [{' '.join(f for f in ISA_FLAGS if f in flags)}]{cap}"
