"""No ``service`` module pulls in torch; only the HTTP layer (``service.http``) may use FastAPI.

Every module is found with ``pkgutil``, so a new one is checked without being listed here.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service

# Where FastAPI (and Starlette under it) may be imported: the HTTP layer only. The engine,
# the batch runner and everything else must work without it.
HTTP_PACKAGE = "service.http"


def service_modules() -> list[str]:
    """Every module and package under ``service``, sorted."""
    names = {"service"}
    for info in pkgutil.walk_packages(service.__path__, prefix="service."):
        names.add(info.name)
    return sorted(names)


def is_http(name: str) -> bool:
    return name == HTTP_PACKAGE or name.startswith(HTTP_PACKAGE + ".")


MODULES = service_modules()
PLAIN = [m for m in MODULES if not is_http(m)]
HTTP = [m for m in MODULES if is_http(m)]


def test_discovery_finds_the_modules() -> None:
    expected = {"service.engine", "service.batch", "service.imaging", "service.metadata"}
    assert expected <= set(PLAIN)
    assert "service.commands.predict" in PLAIN  # sub-packages are walked too


def test_no_torch_anywhere_and_fastapi_only_in_http() -> None:
    # Plain modules first: anything they import is on their account, then the HTTP layer.
    code = (
        "import importlib, sys\n"
        "heavy = ('torch', 'fastapi', 'starlette')\n"
        f"for m in {PLAIN!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        f"for m in {HTTP!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('torch',) if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "[]"]


def test_service_works_without_torch_installed(python_without) -> None:
    # Each module on its own, so a failure names the module that needs the blocked package.
    code = (
        "import importlib\n"
        "failed = []\n"
        "def check(names):\n"
        "    for m in names:\n"
        "        try:\n"
        "            importlib.import_module(m)\n"
        "        except ModuleNotFoundError as exc:\n"
        "            failed.append(f'{m}: {exc}')\n"
        f"check({PLAIN!r})\n"
        "assert not failed, failed\n"
        "import fcn.cli\n"
        "assert fcn.cli.main(['predict', '--help']) == 0\n"
    )
    result = python_without(code, blocked=("torch", "fastapi", "starlette", "torchvision"))
    # argparse's --help exits 0 through SystemExit; anything else is a failure.
    assert result.returncode == 0, result.stderr
    assert "usage: fcn predict" in result.stdout
    if HTTP:
        code = f"import importlib\nfor m in {HTTP!r}: importlib.import_module(m)\n"
        result = python_without(code, blocked=("torch", "torchvision"))
        assert result.returncode == 0, result.stderr
