"""Bounded memory: ``fcn predict`` on a 64 MP GeoTIFF peaks at <= 1.0 GB (slow: ~30 s).

What is bounded here is the raster path (windowed reads, row strips of blended logits, windowed
COG writes), so the model is the small ``conv`` test model: the bundled default adds a constant
(its weights and one window's activations, the same at any raster size) and takes 3-10 minutes
at this size on 2 cores, which is a benchmark's job (bench/geo_bench.py, docs/gis.md), not
CI's. A second, 4x smaller raster shows the peak does not grow with the pixel count.
"""

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


def peak_rss_mb(model, source, out) -> tuple[float, str]:
    command = ["-m", "fcn", "predict", str(model), str(source), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, *command],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=1200,
    )
    usage = json.loads(proc.stdout.strip().splitlines()[-1])
    assert usage["rc"] == 0, proc.stderr[-2000:]
    return usage["maxrss_kib"] / 1024, proc.stderr


@pytest.mark.slow
def test_64_megapixels_peak_rss_stays_under_a_gigabyte(make_raster, conv_model, tmp_path) -> None:
    small, small_log = peak_rss_mb(conv_model, make_raster("mp16", 4000, 4000), tmp_path / "16")
    big, big_log = peak_rss_mb(conv_model, make_raster("mp64", 8000, 8000), tmp_path / "64")
    print(f"peak RSS 16 MP {small:.0f} MB, 64 MP {big:.0f} MB; {big_log.strip().splitlines()[-1]}")
    assert big <= LIMIT_MB, big_log[-2000:]
    # 4x the pixels, 2x the width: only the row strips (proportional to the width) may grow
    # (368 -> 494 MB on a Zen 3); a whole-raster buffer would add 4x its share instead.
    assert big <= 1.5 * small, (small, big)
    assert (tmp_path / "64" / "mp64_mask.tif").exists()
