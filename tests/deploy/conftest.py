"""Shared fixtures for the deployment tests: the repository's files, parsed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the dev extra) reads compose and k8s files")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def settings_fields() -> set[str]:
    """``FCN_*`` variable names the service's settings class reads."""
    from service.http.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def fcn_variables(env: dict) -> dict[str, str]:
    return {key: value for key, value in env.items() if re.fullmatch(r"FCN_\w+", key)}
