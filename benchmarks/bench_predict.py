"""End-to-end CT segmentation speed and memory: ``m2f-med predict`` against a same-size MONAI UNet, one run.

The volume: the real LUNG1-001 CT (512 x 512 x 134 @ 3 mm, ``tcia/nsclc_radiomics_LUNG1-001``) linearly
resampled along Z to 100, 300 and 600 slices and written as uncompressed int16 NIfTI. For each size, each
configuration runs as its own process (so wall time, CPU time and peak RSS, from ``wait4``, are its own):

* ``m2f-med``    ``m2f-med predict VOLUME -o OUT`` with the shipped organ model (Mask2Former tiny, 2.5D
                 k = 1, 1.6 M parameters): load, inference plan, post-processing, NIfTI written;
* ``unet-path``  a MONAI ``UNet`` (2D, channels 16..256, 1.6 M parameters, random weights: speed does not
                 depend on them) through the same m2f-med path (``predict_volume``, same plan, NIfTI written);
* ``unet-monai`` the same UNet the MONAI way: ``LoadImaged`` + ``Orientationd`` + ``Spacingd`` +
                 ``ScaleIntensityRanged`` on the whole volume, ``SliceInferer`` (256² windows, overlap 0.25,
                 8 per batch), ``Invertd`` of the float probabilities, argmax, ``SaveImage``. Skipped (with a
                 line saying so) where its expected peak memory (about 42 MB per 512² slice) would not fit in
                 60 % of the available memory.

All get the same thread settings (torch default threads, ``OMP_WAIT_POLICY=PASSIVE``; see
``m2f_med.threads``). Ratios are m2f-med over the other configuration, measured in this one run:
``slices/s`` (> 1: m2f-med faster) and peak RSS (< 1: m2f-med smaller). The load average before and after is
printed: on a shared machine compare ratios, not seconds.

Usage::

    nice -n 15 python benchmarks/bench_predict.py                   # 100, 300, 600 slices
    python benchmarks/bench_predict.py --sizes 100 --configs m2f-med,unet-path --json out.json

Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("m2f-med", "unet-path", "unet-monai")
NUM_CLASSES = 9
WINDOW = {"a_min": -160, "a_max": 240, "b_min": 0.0, "b_max": 1.0, "clip": True}
PIXDIM = (1.5, 1.5, -1.0)
MONAI_MB_PER_SLICE = 42.0  # measured peak of unet-monai per 512² slice (12.4 GiB at 300 slices)


def make_volume(n_slices: int, out: Path) -> Path:
    """LUNG1-001 linearly resampled along Z to ``n_slices`` slices, saved as int16 NIfTI; returns its path."""
    import nibabel as nib
    import numpy as np

    from m2f_med.data import data_dir

    src = nib.load(data_dir(required=True) / "tcia" / "nsclc_radiomics_LUNG1-001" / "derived_nifti" / "lung1_001_ct.nii.gz")
    data = np.asarray(src.dataobj, dtype=np.float32)
    depth = data.shape[2]
    z = np.linspace(0, depth - 1, n_slices)
    lo = np.floor(z).astype(int)
    hi = np.minimum(lo + 1, depth - 1)
    w = (z - lo).astype(np.float32)
    vol = np.empty((*data.shape[:2], n_slices), dtype=np.int16)
    for k in range(n_slices):
        vol[..., k] = np.round((1 - w[k]) * data[..., lo[k]] + w[k] * data[..., hi[k]])
    affine = src.affine.copy()
    affine[:3, 2] *= (depth - 1) / (n_slices - 1)
    path = out / f"lung1_{n_slices}.nii"
    nib.save(nib.Nifti1Image(vol, affine), path)
    return path


def _unet(in_channels: int = 1):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=NUM_CLASSES + 1,
                channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).eval()


def child_unet_path(volume: Path, out: Path) -> None:
    """The UNet through m2f-med's own inference path (same plan and post-processing as predict)."""
    import torch

    from m2f_med.inference import BundleModel, predict_volume
    from m2f_med.io import load_volume, write_nifti
    from m2f_med.threads import configure_threads

    configure_threads()
    torch.manual_seed(0)
    vol = load_volume(volume)
    model = BundleModel(network=_unet(), labels={i: f"class_{i}" for i in range(1, NUM_CLASSES + 1)},
                        pixdim=PIXDIM, intensity=WINDOW, roi_size=(256, 256), sw_batch_size=8, overlap=0.25)
    mask, _ = predict_volume(vol, model)
    write_nifti(mask, out / "mask.nii.gz", label=True)


def child_unet_monai(volume: Path, out: Path) -> None:
    """The UNet the MONAI way: whole-volume transforms, SliceInferer, Invertd, SaveImage."""
    import torch
    from monai.inferers import SliceInferer
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImage,
        ScaleIntensityRanged,
        Spacingd,
    )
    from monai.utils import convert_to_dst_type

    from m2f_med.threads import configure_threads

    configure_threads()
    torch.manual_seed(0)
    net = _unet()
    pre = Compose([
        LoadImaged("image", image_only=False), EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS", labels=None), Spacingd("image", pixdim=PIXDIM, mode="bilinear"),
        ScaleIntensityRanged("image", **WINDOW),
    ])
    d = pre({"image": str(volume)})
    with torch.inference_mode():
        logits = SliceInferer(roi_size=(256, 256), sw_batch_size=8, overlap=0.25, spatial_dim=2,
                              mode="gaussian")(d["image"].as_tensor()[None], net)
        probs = torch.softmax(logits[0], dim=0)
    del logits
    d["pred"] = convert_to_dst_type(probs, d["image"])[0]
    del probs
    d = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
    d = AsDiscreted("pred", argmax=True)(d)
    SaveImage(output_dir=str(out), output_postfix="seg", separate_folder=False, output_dtype="uint8",
              print_log=False)(d["pred"])


def _run(cmd: list[str], env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2), "stderr": err[-1500:]}


def _mem_available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _hardware() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from m2f_med.threads import usable_cores

    return f"{model}, {usable_cores()} usable cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,300,600", help="slice counts (comma-separated)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, volume, out = args.child
        {"unet-path": child_unet_path, "unet-monai": child_unet_monai}[kind](Path(volume), Path(out))
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    print(f"hardware: {_hardware()}")
    print(f"load average at start: {_load()}", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            volume = make_volume(n, Path(tmp))
            for config in args.configs.split(","):
                out = Path(tmp) / f"{config}_{n}"
                out.mkdir()
                if config == "unet-monai" and n * MONAI_MB_PER_SLICE / 1024 > 0.6 * _mem_available_gb():
                    print(f"{config:>10} {n:>4} slices: skipped, needs about {n * MONAI_MB_PER_SLICE / 1024:.0f} GB "
                          f"of the {_mem_available_gb():.0f} GB available", flush=True)
                    continue
                if config == "m2f-med":
                    cmd = [sys.executable, "-m", "m2f_med", "predict", str(volume), "-o", str(out), "-q"]
                else:
                    cmd = [sys.executable, __file__, "--child", config, str(volume), str(out)]
                r = _run(cmd, env)
                r.update(config=config, slices=n, load_after=_load())
                if r["rc"] != 0:
                    print(f"{config:>10} {n:>4} slices: failed (exit {r['rc']})\n{r['stderr']}", file=sys.stderr)
                    continue
                r["slices_per_s"] = round(n / r["wall_s"], 3)
                results.append(r)
                print(f"{config:>10} {n:>4} slices: wall {r['wall_s']:7.1f} s  CPU {r['cpu_s']:7.1f} s  "
                      f"{r['slices_per_s']:6.2f} slices/s  peak RSS {r['peak_rss_gb']:5.2f} GB  "
                      f"(load {r['load_after']})", flush=True)
            volume.unlink()
    by = {(r["config"], r["slices"]): r for r in results}
    sizes = sorted({r["slices"] for r in results})
    print("\n| slices | config | wall s | CPU s | slices/s | peak RSS GB | slices/s ratio m2f-med/this | peak RSS ratio m2f-med/this |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        m = by.get(("m2f-med", n))
        for config in CONFIGS:
            r = by.get((config, n))
            if r is None:
                continue
            sp = f"{m['slices_per_s'] / r['slices_per_s']:.2f}" if m else "-"
            rss = f"{m['peak_rss_gb'] / r['peak_rss_gb']:.2f}" if m else "-"
            print(f"| {n} | {config} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['slices_per_s']:.2f} | "
                  f"{r['peak_rss_gb']:.2f} | {sp} | {rss} |")
    lo, hi = by.get(("m2f-med", min(sizes, default=0))), by.get(("m2f-med", max(sizes, default=0)))
    if lo and hi and lo is not hi:
        vol_gb = {r["slices"]: r["slices"] * 512 * 512 * 4 / 2**30 for r in (lo, hi)}  # float32 volume in memory
        growth = (hi["peak_rss_gb"] - vol_gb[hi["slices"]]) / (lo["peak_rss_gb"] - vol_gb[lo["slices"]])
        print(f"\nm2f-med peak RSS beyond the float32 volume: {lo['slices']} slices "
              f"{lo['peak_rss_gb'] - vol_gb[lo['slices']]:.2f} GB, {hi['slices']} slices "
              f"{hi['peak_rss_gb'] - vol_gb[hi['slices']]:.2f} GB (x{growth:.2f})")
    print(f"load average at end: {_load()}")
    if args.json:
        args.json.write_text(json.dumps({"hardware": _hardware(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
