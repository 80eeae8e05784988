"""The version is written once (``fcn.__version__``); the package metadata is built from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

import fcn

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_reads_the_version_instead_of_repeating_it() -> None:
    raw = read_configuration(ROOT / "pyproject.toml", expand=False)
    assert "version" not in raw["project"] and "version" in raw["project"]["dynamic"]
    assert raw["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fcn.__version__"}
    built = read_configuration(ROOT / "pyproject.toml", expand=True)  # what a build writes
    assert built["project"]["version"] == fcn.__version__


def test_fcn_version_works_from_a_source_checkout_on_pythonpath(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "fcn", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fcn {fcn.__version__}"
