"""Peak memory on a huge image: tiling must keep an 8000x8000 prediction under 2.5 GB RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PEAK_LIMIT_MB = 2500


def describe_host() -> str:
    """CPU model, usable cores and memory: what a failed peak needs to be read."""
    from service.engine.config import usable_cores

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    total = Path("/proc/meminfo").read_text().splitlines()[0]
    return f"{model}, {usable_cores()} usable cores (os.cpu_count {os.cpu_count()}), {total}"


@pytest.mark.slow
def test_8000_square_prediction_peak_rss(conv_model: Path, tmp_path: Path) -> None:
    side = 8000
    coarse = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((side, side), Image.BILINEAR).save(
        tmp_path / "huge.png", compress_level=1
    )
    out = tmp_path / "out"
    # A fresh interpreter, so the peak RSS is the CLI's alone (not pytest's or the image's).
    # 64 MP is above the default pixel limit (an 8000x6000 photo): raised for this image only.
    code = (
        "import resource, sys\nfrom fcn.cli import main\n"
        f"code = main(['predict', {str(conv_model)!r}, {str(tmp_path / 'huge.png')!r}, "
        f"'--out', {str(out)!r}, '-f', 'index,color,overlay,json', "
        f"'--max-pixels', '{side * side}'])\n"
        "print('PEAK_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak = int(result.stdout.split("PEAK_MB")[-1])
    print(f"peak RSS for {side}x{side}: {peak} MB")
    # CI once saw 3624 MB here where a Zen 3 sees ~900: the log names the path and threads.
    assert peak <= PEAK_LIMIT_MB, f"{peak} MB; {describe_host()}; log:\n{result.stderr[-3000:]}"
    mask = Image.open(out / "huge_mask.png")
    assert mask.size == (side, side)
