"""Fuzz the API from its own OpenAPI schema with schemathesis against a real ``fcn serve``.

Every operation, a bounded number of generated requests (fixed seed, so a failure replays),
every check schemathesis has: no 5xx, statuses, content types, headers and bodies conforming
to the schema, schema-invalid input rejected. One check is left out on purpose:
``positive_data_acceptance`` expects every schema-valid request to succeed, but an image is a
``binary`` string to OpenAPI — whether its bytes decode (415/400 otherwise) cannot be written in
the schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.http.conftest import start_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def fuzz(
    url: str, examples: int, tmp_path: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            str(examples),
            "--seed",
            "20240610",
            "--request-timeout",
            "10",
            "--max-response-time",
            "2",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


@pytest.fixture
def server(conv_model, tmp_path):
    if not SCHEMATHESIS.exists():
        pytest.skip("schemathesis is not installed (pip install 'fcnseg[dev]')")
    # With a jobs folder, so the job API's routes are fuzzed beyond their 503.
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    server = start_server(
        ["--model", f"conv={conv_model}", "--no-access-log"],
        tmp_path,
        {"FCN_JOBS_DIR": str(jobs)},
    )
    yield server
    assert server.stop() == 0, server.output()


def check(done: subprocess.CompletedProcess, server) -> None:
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    schema = server.get_json("/openapi.json")
    operations = sum(len(methods) for methods in schema["paths"].values())
    assert operations >= 15, schema[
        "paths"
    ]  # /v1 (segment, models, models/{name}, reload), health, /v2 (9)
    assert f"{operations} selected / {operations} total" in done.stdout, report
    assert " passed" in done.stdout and "failed" not in done.stdout.split("SUMMARY")[-1], report
    assert "Traceback" not in server.output()


@pytest.mark.slow  # end to end, tens of seconds on 2 cores: CI runs it in `make test-slow`
def test_schemathesis_finds_nothing(server, tmp_path) -> None:
    check(fuzz(server.url, 100, tmp_path), server)


# 1000 examples of every operation are over 20,000 requests: more than 300 s on a loaded 2-core
# machine (twice, 2026-12-07), so this one gets 25 minutes (a hang guard, not a speed target)
# and is marked long: beyond CI's budget, `make test-long` runs it.
@pytest.mark.long
@pytest.mark.timeout(1600)
def test_schemathesis_finds_nothing_in_many_more_examples(server, tmp_path) -> None:
    check(fuzz(server.url, 1000, tmp_path, timeout=1500), server)
