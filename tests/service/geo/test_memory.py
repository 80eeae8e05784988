"""Bounded memory: ``fcn predict`` on a 64 MP GeoTIFF peaks at <= 1.0 GB (slow: minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.requirements import ROOT

LIMIT_MB = 1024

WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': code, 'maxrss_kib': r.ru_maxrss}))\n"
)


@pytest.mark.slow
def test_64_megapixels_peak_rss_stays_under_a_gigabyte(make_raster, tmp_path) -> None:
    source = make_raster("mp64", 8000, 8000)
    command = ["-m", "fcn", "predict", "default", str(source), "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, *command],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=3600,
    )
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    assert usage["rc"] == 0, proc.stderr[-2000:]
    peak_mb = usage["maxrss_kib"] / 1024
    print(f"peak RSS {peak_mb:.0f} MB; {proc.stderr.strip().splitlines()[-1]}")
    assert peak_mb <= LIMIT_MB
    assert (tmp_path / "mp64_mask.tif").exists()
