"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.requirements import REQUIRE_ALL, required

# Runs a snippet in a fresh interpreter in which importing any of BLOCKED fails as if the
# package were not installed: how the serving image (no torch) behaves.
_BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(",")) - {""}
    class _Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _Blocker())
    """
)


def run_python(code: str, blocked: tuple[str, ...] = (), timeout: float = 120):
    """Run ``code`` in a subprocess with ``blocked`` top-level packages made unimportable."""
    script = _BLOCKER + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def python_without():
    return run_python


@pytest.fixture(scope="session", autouse=True)
def _speed_probe_cache(tmp_path_factory):
    """Engines (and servers started by tests) keep their speed measurements
    (service/backends/probe.py) in a folder of this run, not in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        yield


def _import_or_fail(modname: str, minversion: str | None = None, reason: str | None = None, **kw):
    """``pytest.importorskip`` under ``FCN_REQUIRE_ALL=1``: CI installs every extra (``.[all]``),
    so a module a test needs that does not import is a broken install, not a reason to skip."""
    try:
        return _importorskip(modname, minversion, reason, **kw)
    except pytest.skip.Exception as skip:
        pytest.fail(f"required here ({REQUIRE_ALL}=1): {skip.msg}", pytrace=False)


_importorskip = pytest.importorskip
if required():
    pytest.importorskip = _import_or_fail
