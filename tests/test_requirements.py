"""The CI switch: with FCN_REQUIRE_ALL=1 a test that would skip for a missing browser, server,
engine or data set fails instead, and every such test goes through tests/requirements.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import requirements

ROOT = Path(__file__).resolve().parent.parent
# What a skip for a missing machine part mentions; such a skip must use require_or_skip.
MACHINE_PARTS = re.compile(r"chrom|nginx|docker|label.studio|shared|dubai|isbi", re.I)


def test_skips_without_the_switch_and_fails_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(requirements.REQUIRE_ALL, raising=False)
    monkeypatch.delenv("FCN_COMPOSE_REQUIRED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no nginx"):
        requirements.require_or_skip("no nginx")
    monkeypatch.setenv("FCN_COMPOSE_REQUIRED", "1")  # a part's own switch still works
    with pytest.raises(pytest.fail.Exception, match="FCN_COMPOSE_REQUIRED"):
        requirements.require_or_skip("no docker", switch="FCN_COMPOSE_REQUIRED")
    monkeypatch.delenv("FCN_COMPOSE_REQUIRED")
    monkeypatch.setenv(requirements.REQUIRE_ALL, "1")
    with pytest.raises(pytest.fail.Exception, match="required here .*no nginx"):
        requirements.require_or_skip("no nginx")


def test_missing_shared_data_follows_the_switch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FCN_SHARED_DATA", str(tmp_path))
    (tmp_path / "present").mkdir()
    assert requirements.shared_data("present") == tmp_path / "present"
    monkeypatch.delenv(requirements.REQUIRE_ALL, raising=False)
    with pytest.raises(pytest.skip.Exception):
        requirements.shared_data("absent")
    monkeypatch.setenv(requirements.REQUIRE_ALL, "1")
    with pytest.raises(pytest.fail.Exception, match="absent"):
        requirements.shared_data("absent")


def test_no_test_skips_for_a_machine_part_on_its_own() -> None:
    # A direct skip that names a machine part would skip in CI too: use require_or_skip.
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name == "requirements.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"pytest\.skip\((?:[^()]|\([^()]*\))*\)", text, re.S):
            if MACHINE_PARTS.search(match.group(0)):
                line = text[: match.start()].count("\n") + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, offenders


def test_the_browser_test_fails_in_ci_without_chromium(tmp_path: Path) -> None:
    # FCN_CHROMIUM names a browser that is not there: the page test must fail, not skip.
    env = {
        **os.environ,
        requirements.REQUIRE_ALL: "1",
        "FCN_CHROMIUM": str(tmp_path / "no-chromium"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfE",
            "tests/e2e/test_web_page.py",
            "-k",
            "sample",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout[-2000:]
    assert "required here (FCN_REQUIRE_ALL=1)" in result.stdout, result.stdout[-2000:]
    assert "chromium" in result.stdout
