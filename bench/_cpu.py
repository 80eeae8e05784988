"""What every benchmark records about the CPU it ran on: a figure without it is not comparable.

``cpu_info()`` goes into each results JSON under the key ``"cpu"``: the model name, the ISA
flags that decide which kernels run (AVX2, AVX-512, VNNI int8 dot products, native bf16, AMX),
the cores this process may use and the load average when the numbers were taken (the
benchmark machines are shared). The flags come from the serving code's own reader
(:mod:`service.backends.cpu`), so a bench and ``precision="auto"`` see the same CPU.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/NAME.py`: bench/ is on the path, not ROOT
    sys.path.insert(0, str(ROOT))

from service.backends.cpu import (  # noqa: E402
    ISA_FLAGS,
    cpu_flags,
    cpu_has_bf16,
    cpu_has_int8_dot,
    cpu_id,
    cpu_model,
    isa_cap,
)


def cpu_info() -> dict:
    """The CPU block of a results JSON (see the module docstring)."""
    flags = cpu_flags()
    return {
        "model": cpu_model(),
        "id": cpu_id(),  # vendor family/model/stepping
        "arch": platform.machine(),
        "flags": {name: name in flags for name in ISA_FLAGS},
        # ONEDNN_MAX_CPU_ISA: a bigger CPU approximating a smaller one (flags above are the
        # CPU's own; native_bf16 and int8_dot_product below are after the cap)
        "onednn_max_cpu_isa": isa_cap(),
        "native_bf16": cpu_has_bf16(),
        "int8_dot_product": cpu_has_int8_dot(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cores_online": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_label(info: dict | None = None) -> str:
    """One line for a table caption: the model and the flags it has, e.g. ``AMD EPYC (avx2)``."""
    info = info or cpu_info()
    have = [name for name, on in info["flags"].items() if on]
    cap = f", capped at {info['onednn_max_cpu_isa']}" if info.get("onednn_max_cpu_isa") else ""
    return f"{info['model']} ({', '.join(have) or 'no listed ISA flags'}{cap})"
