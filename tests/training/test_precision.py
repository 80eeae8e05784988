"""The default training precision: bfloat16 autocast only on CPUs with native bf16, and never
for FCN-VGG, whose backward pass aborted under it (training/loop/epoch.py says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.conftest import save_image
from training.loop import epoch
from training.loop.epoch import CPU_BF16_UNSAFE, use_cpu_bf16

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("native", [True, False], ids=["amx-cpu", "avx2-cpu"])
def test_fcn_vgg_trains_in_float32_by_default_on_any_cpu(monkeypatch, native) -> None:
    monkeypatch.setattr(epoch, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert CPU_BF16_UNSAFE == {"fcn8s", "fcn16s", "fcn32s"}
    for arch in CPU_BF16_UNSAFE:
        assert not use_cpu_bf16(None, cpu, arch)
        assert use_cpu_bf16(True, cpu, arch)  # asked for explicitly: the user's choice
    assert use_cpu_bf16(None, cpu, "unet") is native  # other models: where it is native


# Run in a child process: a heap corruption aborts the process, which must fail this test
# rather than kill pytest. The child claims a CPU with native bf16 (as an AMX machine does)
# so the default is the one such a machine would get.
CHILD = """
import sys
import training.loop.epoch as epoch
epoch.cpu_has_native_bf16 = lambda: True
from fcn.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_fcn8s_trains_a_few_steps_with_default_options(tmp_path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(8):
        save_image(
            tmp_path / "ds/images" / f"i{i}.png", rng.integers(0, 256, (48, 48, 3), np.uint8)
        )
        mask = (rng.random((48, 48)) > 0.5).astype(np.uint8) * 255
        save_image(tmp_path / "ds/masks" / f"i{i}.png", mask)
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "ds"), "--mask-values", "0,255", "--arch", "fcn8s"]
    # Only the size of the run is set: one epoch of the 6 training images, 3 steps of 2 crops;
    # precision and everything else are the defaults.
    argv += ["--epochs", "1", "--epoch-size", "4", "--batch-size", "2", "--crop-size", "32"]
    argv += ["--no-plots", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fcn8s" in done.stderr and "in float32" in done.stderr
    assert "bfloat16" not in done.stderr
    assert "3 steps" in done.stdout and (out / "last.pt").is_file()
