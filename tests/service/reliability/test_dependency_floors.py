"""Dependency floors: pyproject keeps the versions with the known security fixes, and what is
installed here satisfies every floor pyproject declares."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"

# package -> (lowest acceptable floor, the advisories it answers); SECURITY.md explains each.
SECURITY_FLOORS: dict[str, tuple[str, str]] = {
    "pillow": ("12.3.0", "CVE-2026-40192 and the 12.3.0 decompression-bomb/OOB fixes"),
    "python-multipart": (
        "0.0.27",
        "CVE-2024-24762, CVE-2024-53981, CVE-2026-40347, CVE-2026-42561",
    ),
    "starlette": ("1.5.1", "CVE-2024-47874, CVE-2025-62727, FileResponse range limit"),
    "fastapi": ("0.109.1", "CVE-2024-24762 (GHSA-qf9m-vfgh-m389)"),
    "h11": ("0.16.0", "CVE-2025-43859"),
    "onnx": ("1.21.0", "CVE-2024-27318, CVE-2024-5187, CVE-2026-27489"),
    "torch": ("2.6.0", "CVE-2025-32434"),
}


def declared() -> dict[str, Version]:
    """The highest ``>=`` floor of each package over every extra in pyproject."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    floors: dict[str, Version] = {}
    for requirements in extras.values():
        for text in requirements:
            req = Requirement(text)
            if req.name == "fcnseg":
                continue
            for spec in req.specifier:
                if spec.operator == ">=":
                    name = req.name.lower()
                    floors[name] = max(floors.get(name, Version("0")), Version(spec.version))
    return floors


def test_security_floors_are_declared() -> None:
    floors = declared()
    for name, (minimum, why) in SECURITY_FLOORS.items():
        assert name in floors, f"pyproject declares no floor for {name} ({why})"
        assert floors[name] >= Version(minimum), f"{name} floor {floors[name]} < {minimum}: {why}"


def test_installed_versions_meet_every_declared_floor() -> None:
    checked = 0
    for name, floor in declared().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # an extra not installed here (ray, openvino, ...)
        assert installed >= floor, f"{name} {installed} is installed; pyproject needs >= {floor}"
        checked += 1
    assert checked >= 10, "too few packages found to mean anything"
