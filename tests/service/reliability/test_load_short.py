"""Short versions of bench/reliability_bench.py (seconds each; the bench runs the long ones).

Overload at twice capacity, a memory soak over distinct sizes, SIGTERM under load, and the
ONNX Runtime memory arena off by default. (SIGKILL + ``--skip-existing`` of the batch CLI has
its short version in tests/service/batch/test_resume.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.reliability_bench import MMAP_1MIB, overload, sigterm, soak
from service.backends.ort import create_session
from service.engine import EngineConfig


def test_overload_at_twice_capacity_refuses_fast_and_completes_the_rest(
    slow_model: Path, tmp_path: Path
) -> None:
    result = overload(str(slow_model), tmp_path, seconds=3, side=256)
    assert result["status_200"] > 0 and result["status_503"] > 0, result
    assert result["other_count"] == 0 and result["server_5xx"] == 0, result
    assert result["rejected_without_retry_after"] == 0, result
    assert result["rejected_ms"]["p99"] < 100, result
    assert result["healthz_ms"]["p99"] < 100, result
    assert result["exit_code"] == 0


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_memory_stays_flat_over_distinct_sizes(conv_model: Path, tmp_path: Path) -> None:
    # glibc would keep this tiny model's freed buffers (bench: 309 -> 410 MB); see SECURITY.md
    result = soak(
        str(conv_model), tmp_path, requests=300, arena=False, checkpoint=100, env=MMAP_1MIB
    )
    assert result["statuses"] == {200: 300}, result
    assert result["distinct_sizes"] == 300
    assert abs(result["growth"]) <= 0.10, result


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_sigterm_under_load_drains(slow_model: Path, tmp_path: Path) -> None:
    result = sigterm(str(slow_model), tmp_path, side=256)
    assert result["readyz_after_signal"]["status"] == 503, result
    assert result["readyz_after_signal"]["new_request_code"] == "draining", result
    assert result["accepted_statuses"] == [200] * result["accepted"], result
    assert result["exit_code"] == 0 and result["exit_s_after_signal"] < result["grace_s"]


@pytest.mark.parametrize("arena", [False, True])
def test_the_memory_arena_follows_the_config(conv_model: Path, arena: bool) -> None:
    session = create_session(conv_model, EngineConfig(memory_arena=arena))
    options = session.get_session_options()
    assert options.enable_cpu_mem_arena is arena
    assert options.enable_mem_pattern is arena


def test_the_arena_is_off_by_default() -> None:
    assert EngineConfig().memory_arena is False
