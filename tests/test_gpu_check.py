"""benchmarks/gpu_check.sh runs on a machine without CUDA and says, part by part, that it skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the real (minutes-long) check")
def test_gpu_check_skips_every_gpu_part_without_cuda():
    env = {**os.environ, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    parts = [r.split("|")[1].strip() for r in rows]
    assert parts == ["tests (pytest -m gpu)", "predict fp32", "predict fp16", "predict bf16",
                     "train amp=fp32", "train amp=bf16", "train amp=fp16"]
    assert all("skipped: no CUDA device" in r for r in rows)
