"""No ``service`` module pulls in torch; only the HTTP layer (``service.http``) may use FastAPI;
every module of ``service``, ``training`` and ``fcn`` imports on its own (no import cycle).

Every module is found with ``pkgutil``, so a new one is checked without being listed here.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import fcn
import service
import training

# Where FastAPI (and Starlette under it) may be imported: the HTTP layer only. The engine,
# the batch runner and everything else must work without it.
HTTP_PACKAGE = "service.http"


def modules_of(package) -> list[str]:
    """Every module and package under ``package``, sorted."""
    names = {package.__name__}
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        names.add(info.name)
    return sorted(names)


def service_modules() -> list[str]:
    return modules_of(service)


def is_http(name: str) -> bool:
    return name == HTTP_PACKAGE or name.startswith(HTTP_PACKAGE + ".")


MODULES = service_modules()
PLAIN = [m for m in MODULES if not is_http(m)]
HTTP = [m for m in MODULES if is_http(m)]


def test_discovery_finds_the_modules() -> None:
    expected = {"service.engine", "service.batch.runner", "service.imaging", "service.metadata"}
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


# Each module is imported first in a fresh import state: a cycle that only bites when the import
# starts from a particular module (a imports b, b imports a at the top) shows up as an
# ImportError for that module. The parent imports everything once (so third-party packages
# are loaded and shared); each module then runs in a forked child that first forgets every
# module of the project's packages, so the project's own code is executed afresh from it.
FRESH_IMPORTS = """
import importlib, os, sys
names = sys.argv[1:]
ours = {name.split(".")[0] for name in names}
for name in names:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001  (the child below reports it)
        pass
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        for loaded in [m for m in sys.modules if m.split(".")[0] in ours]:
            del sys.modules[loaded]
        code = 0
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  (reported with the module's name)
            sys.stderr.write(f"{name}: {type(exc).__name__}: {exc}\\n")
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print(failed)
"""


def test_every_module_imports_first_in_a_fresh_process() -> None:
    names = modules_of(service) + modules_of(training) + modules_of(fcn)
    names = [name for name in names if not name.endswith(".__main__")]  # runs the CLI
    assert len(names) > 100  # the walk found the tree
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORTS, *names], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stderr


def test_a_cycle_is_caught(tmp_path) -> None:
    # Two modules that need each other's names at import time: importing either one first fails.
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (package / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORTS, "cyclic.a", "cyclic.b"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        },
    )
    assert result.stdout.strip() == "['cyclic.a', 'cyclic.b']", result.stderr
    assert "partially initialized module" in result.stderr
