"""One-shot GPU check: CUDA tests, predict on a 300-slice CT in fp32 / fp16 / bf16, training with and without AMP.

Run through ``benchmarks/gpu_check.sh`` (under 8 minutes on one GPU). Each part prints one row of a table;
without a CUDA device every GPU part is skipped with a line saying so (the script still runs, so it can be
checked on a CPU-only machine).

Rows:

* ``tests``         ``pytest -m gpu`` (the CUDA test subset), pass/fail counts;
* ``predict fp32|fp16|bf16``  ``m2f-med predict`` on LUNG1-001 resampled to 300 slices of 512² with the
                    shipped organ model, ``--device cuda`` and ``--amp --amp-dtype float16|bfloat16``: wall
                    seconds, slices/s, and the voxel agreement of the mask with the fp32 one;
* ``train amp=fp32|bf16|fp16`` 20 training iterations of ``configs/train.yaml`` (validation off): seconds
                    per iteration after the first (the first compiles kernels / fills caches).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "m2f_ct_organs"
SKIP = "skipped: no CUDA device (torch.cuda.is_available() is False)"


def _row(part: str, result: str, detail: str = "") -> None:
    print(f"| {part} | {result} | {detail} |", flush=True)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def check_tests(cuda: bool, timeout: int) -> None:
    if not cuda:
        _row("tests (pytest -m gpu)", SKIP)
        return
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
        last = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
        _row("tests (pytest -m gpu)", "ok" if out.returncode == 0 else f"FAILED (exit {out.returncode})",
             f"{last}; {time.perf_counter() - t0:.0f} s")
    except subprocess.TimeoutExpired:
        _row("tests (pytest -m gpu)", f"FAILED: over {timeout} s")


def check_predict(cuda: bool, slices: int, timeout: int) -> None:
    if not cuda:
        for dtype in ("fp32", "fp16", "bf16"):
            _row(f"predict {dtype}", SKIP)
        return
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_predict import make_volume

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        volume = make_volume(slices, Path(tmp))
        masks = {}
        for dtype, flags in (("fp32", []), ("fp16", ["--amp", "--amp-dtype", "float16"]),
                             ("bf16", ["--amp", "--amp-dtype", "bfloat16"])):
            out = Path(tmp) / dtype
            cmd = [sys.executable, "-m", "m2f_med", "predict", str(volume), "-o", str(out), "-q", "--device", "cuda",
                   *flags]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                _row(f"predict {dtype}", f"FAILED: over {timeout} s")
                continue
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                _row(f"predict {dtype}", f"FAILED (exit {proc.returncode})", proc.stderr.strip()[-300:])
                continue
            report = json.loads((out / "run_report.json").read_text())
            series = report["series"][0]
            masks[dtype] = np.asarray(nib.load(out / series["key"] / "mask.nii.gz").dataobj)
            agree = "" if dtype == "fp32" or "fp32" not in masks else \
                f", voxel agreement with fp32 {float((masks[dtype] == masks['fp32']).mean()):.5f}"
            _row(f"predict {dtype}", "ok", f"{wall:.1f} s wall ({series['timings']['inference_s']:.1f} s inference, "
                 f"{slices / series['timings']['inference_s']:.1f} slices/s){agree}")


def check_training(cuda: bool, iterations: int) -> None:
    if not cuda:
        for amp in ("fp32", "bf16", "fp16"):
            _row(f"train amp={amp}", SKIP)
        return
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    for amp in ("fp32", "bf16", "fp16"):
        with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as tmp:
            try:
                wf = ConfigWorkflow(
                    config_file=str(BUNDLE / "configs" / "train.yaml"), workflow_type="train", bundle_root=str(BUNDLE),
                    ckpt_dir=f"{tmp}/models", log_dir=f"{tmp}/logs", output_dir=f"{tmp}/eval", max_epochs=1,
                    iterations_per_epoch=iterations, val_interval=10**6, amp=amp,
                )
                wf.initialize()
                trainer = wf.parser.get_parsed_content("train#trainer")
                marks: list[float] = []
                trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e, m=marks: m.append(time.perf_counter()))
                wf.run()
                wf.finalize()
                per = (marks[-1] - marks[0]) / max(len(marks) - 1, 1)
                _row(f"train amp={amp}", "ok", f"{per:.3f} s per iteration ({len(marks)} iterations, first excluded)")
            except Exception as err:  # noqa: BLE001 - one failing part must not hide the others
                _row(f"train amp={amp}", f"FAILED: {type(err).__name__}", str(err).splitlines()[0][:200])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=150, help="seconds per subprocess (tests, each predict)")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"m2f-med GPU check: torch {torch.__version__}, CUDA device: {device}")
    if not cuda:
        print("no CUDA device: the GPU parts below are skipped (this run only checks that the script works)")
    print("\n| part | result | detail |\n|---|---|---|", flush=True)
    check_tests(cuda, args.timeout)
    check_predict(cuda, args.slices, args.timeout)
    check_training(cuda, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
