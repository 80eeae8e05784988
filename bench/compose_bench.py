"""The compose deployment, timed: clean-path builds, image sizes, start-to-ready, e2e suite.

    python bench/compose_bench.py            # reuse the engine's layers and the base caches
    python bench/compose_bench.py --clean    # CI's path: no engine data, no caches, no compose
    python bench/compose_bench.py --e2e      # and time the tests/compose suite too

Phases (each a separate command, timed from outside): ``docker/e2e.sh prepare`` (engine,
Compose v2, stand-in bases), ``docker/e2e.sh build`` (both images), ``compose up --wait`` of
the api and the first ``/readyz`` answer (start-to-ready), and with ``--e2e`` the
``tests/compose`` suite (``make compose-test``'s pytest run; its own build step then hits the
cache). Image sizes,
the serve image's layers and what fills its venv come from the engine. The machine's load
average is recorded beside every phase: on a shared machine the timings are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "e2e.sh"
STATE = Path(os.environ.get("FCN_DOCKER_STATE", "/var/lib/fcn-docker"))
PROJECT = "fcnseg-bench"
PORT = 38200


def machine() -> dict:
    """The CPU as bench/tables.py reads it: model name and the ISA flags that matter."""
    flags: set[str] = set()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
    isa = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
    return {
        "cpu": {"model": model, "flags": {f: f in flags for f in isa}},
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def timed(name: str, command: list[str], env: dict, results: dict, timeout: float = 3600) -> str:
    print(f"-- {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    results[name] = {"seconds": round(seconds, 1), "load_average": os.getloadavg()[0]}
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise SystemExit(f"{name} failed ({proc.returncode})")
    return proc.stdout + proc.stderr


def engine_env() -> dict:
    env = dict(os.environ)
    out = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def docker(env: dict, *args: str) -> str:
    return subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def sizes(env: dict) -> dict:
    images = {}
    for ref in ("fcnseg-serve:latest", "fcnseg-train:latest"):
        images[ref] = round(int(docker(env, "image", "inspect", "-f", "{{.Size}}", ref)) / 1e6)
    history = docker(env, "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}",
                     "fcnseg-serve:latest")  # fmt: skip
    layers = [
        {"size": size, "step": step[:120]}
        for size, step in (line.split("\t", 1) for line in history.splitlines())
        if size not in ("0B", "0")
    ]
    du = docker(env, "run", "--rm", "--entrypoint", "sh", "fcnseg-serve:latest", "-c",
                "du -sm /opt/fcn; cd /opt/fcn/lib/python3*/site-packages && du -sm * | sort -rn"
                " | head -12; find /opt/fcn -name '*.pyc' -printf '%s\\n' | awk '{s+=$1} END"
                " {print int(s/1e6), \"pyc\"}'")  # fmt: skip
    lines = du.split("\n")
    return {
        "images_mb": images,
        "serve_layers": layers,
        "serve_venv_mb": int(lines[0].split()[0]),
        "serve_venv_largest_mb": {p.split()[1]: int(p.split()[0]) for p in lines[1:] if p},
    }


def start_to_ready(env: dict) -> dict:
    compose = [env["FCN_COMPOSE"], "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]
    env = {**env, "FCN_API_PORTS": f"{PORT}-{PORT + 9}"}
    subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, check=True)
    start = time.monotonic()
    subprocess.run([*compose, "up", "-d", "api"], env=env, capture_output=True, check=True)
    ready = None
    while time.monotonic() - start < 120 and ready is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=2) as r:
                ready = time.monotonic() - start if r.status == 200 else None
        except OSError:
            time.sleep(0.1)
    subprocess.run([*compose, "up", "-d", "--wait", "api"], env=env, capture_output=True,
                   check=True)  # fmt: skip
    healthy = time.monotonic() - start
    subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, check=True)
    return {"readyz_s": round(ready, 1), "healthy_s": round(healthy, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="start from nothing, as CI does")
    parser.add_argument("--e2e", action="store_true", help="also time the tests/compose suite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/compose_bench.json")
    args = parser.parse_args()
    env = dict(os.environ)
    results: dict = {}
    if args.clean:
        subprocess.run(["bash", str(SCRIPT), "stop"], check=True)
        mounts = Path("/proc/mounts").read_text()
        if str(STATE) in mounts:
            raise SystemExit(f"{STATE} still has mounts; stop the engine first")
        shutil.rmtree(STATE, ignore_errors=True)
    timed("prepare", ["bash", str(SCRIPT), "prepare"], env, results)
    timed("build", ["bash", str(SCRIPT), "build"], env, results)
    env = engine_env()
    report = sizes(env)
    report["start_to_ready"] = start_to_ready(env)
    summary = "not run here (bench/compose_bench.py --e2e)"
    if args.e2e:
        out = timed(
            "e2e",
            [sys.executable, "-m", "pytest", "-m", "compose", "tests/compose", "-q",
             "-p", "no:cacheprovider"],
            {**env, "FCN_COMPOSE_REQUIRED": "1"}, results,
        )  # fmt: skip
        found = re.findall(r"^=* ?(\d+ passed.*) in ([\d.]+)s", out, flags=re.M)
        summary = found[-1][0] if found else out.strip().splitlines()[-1]
    report.update(
        date=time.strftime("%Y-%m-%d"),
        what="docker-compose.yml on a private Docker engine, "
        + ("clean" if args.clean else "warm"),
        machine=machine(),
        phases=results,
        docker_total_s=round(sum(p["seconds"] for p in results.values()), 1),
        e2e_summary=summary,
    )
    print(f"\n{'phase':<10}{'seconds':>9}{'load avg':>10}")
    for name, phase in results.items():
        print(f"{name:<10}{phase['seconds']:>9.1f}{phase['load_average']:>10.1f}")
    print(f"{'total':<10}{report['docker_total_s']:>9.1f}")
    print(f"\nimages (MB): {report['images_mb']}; serve venv {report['serve_venv_mb']} MB")
    print(f"start to ready: {report['start_to_ready']}; e2e: {report['e2e_summary']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
