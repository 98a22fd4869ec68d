"""Volume inference speed and memory: m2f-med's slab-wise inferer vs. MONAI UNet + SliceInferer.

Volumes of N slices are made by tiling the real 41-slice abdominal CT of ``tcia/crlm_liver_mets_ct_noseg``
(512 x 512 @ 0.8 mm) back and forth along Z (so neighbouring slices stay neighbours). Each configuration
runs in its own subprocess so that peak RSS (``ru_maxrss``) is its own:

* ``m2f-slab``   Mask2Former (tiny preset, random weights, 1.6 M parameters), k = 1 (3 input slices),
                 through ``m2f_med.inference.predict_volume`` (slab-wise, uint8 mask kept);
* ``unet-slab``  MONAI ``UNet`` (2D, channels 16..256, 1.6 M parameters), k = 0, same slab-wise path;
* ``unet-monai`` the same UNet the MONAI way: ``Orientationd`` + ``Spacingd`` + ``ScaleIntensityRanged`` on
                 the whole volume, ``SliceInferer``, ``Invertd`` of the float probabilities, argmax.

All use ``pixdim`` 1.5 x 1.5 mm in-plane, CT window [-160, 240] HU, the same ROI, overlap 0.25 and
``sw_batch_size``. Reported per run: seconds per volume, slices/s, peak RSS of the process, and the RSS
added by inference: the peak during inference (``VmHWM`` after resetting it through ``/proc/self/clear_refs``)
minus the RSS just before, i.e. what inference needs beyond the loaded volume and the network.

Usage::

    python benchmarks/bench_inference.py                       # 50, 200, 600 slices, full 512 x 512
    python benchmarks/bench_inference.py --sizes 50,200 --crop 256 --threads 2
    python benchmarks/bench_inference.py --json results.json

Weights are random: speed and memory do not depend on them. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("m2f-slab", "unet-slab", "unet-monai")
NUM_CLASSES = 9
WINDOW = {"a_min": -160, "a_max": 240, "b_min": 0.0, "b_max": 1.0, "clip": True}
PIXDIM = (1.5, 1.5, -1.0)


def _rss_mb() -> float:
    """Peak RSS of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` from ``/proc/self/status`` in MB (Linux), else ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak() -> float | None:
    """Reset the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``); returns the current RSS (MB)."""
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def _volume(n_slices: int, crop: int | None):
    import numpy as np
    import torch

    from m2f_med.data import data_dir
    from m2f_med.io import load_dicom_series
    from m2f_med.io.volume import make_volume

    folder = data_dir(required=True) / "tcia" / "crlm_liver_mets_ct_noseg" / "CRLM-CT-1004" / "ct_dicom"
    src = load_dicom_series(folder)
    data = src.as_tensor()
    affine = src.affine.numpy().copy()
    if crop:  # crop before tiling, so loading never holds a full-size tiled volume
        x0 = (data.shape[1] - crop) // 2
        y0 = (data.shape[2] - crop) // 2
        data = data[:, x0:x0 + crop, y0:y0 + crop].contiguous()
        affine[:3, 3] += affine[:3, 0] * x0 + affine[:3, 1] * y0
    depth = data.shape[-1]
    period = 2 * (depth - 1)
    order = np.abs((np.arange(n_slices) % period) - (depth - 1))[::-1].copy()  # ping-pong over the real slices
    tiled = data[..., torch.as_tensor(order)].contiguous()
    del src, data
    return make_volume(tiled, affine, modality="CT")


def _unet(in_channels: int):
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=NUM_CLASSES + 1,
                channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).eval()


def child(config: str, n_slices: int, crop: int | None, roi: int, sw_batch: int, slab: int, threads: int) -> dict:
    """Run one configuration and return its measurements (called in a fresh process)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from m2f_med.inference import BundleModel, predict_volume

    labels = {i: f"class_{i}" for i in range(1, NUM_CLASSES + 1)}
    volume = _volume(n_slices, crop)
    if config == "m2f-slab":
        from m2f_med.networks import Mask2FormerNet

        net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=NUM_CLASSES)
        k = 1
    else:
        net = _unet(1)
        k = 0
    params = sum(p.numel() for p in net.parameters())
    rss_before = _reset_peak()
    t0 = time.perf_counter()
    if config.endswith("-slab"):
        model = BundleModel(network=net, labels=labels, num_context_slices=k, pixdim=PIXDIM, intensity=WINDOW,
                            roi_size=(roi, roi), sw_batch_size=sw_batch, overlap=0.25)
        mask, _ = predict_volume(volume, model, slab_size=slab)
    else:
        from monai.data import MetaTensor
        from monai.inferers import SliceInferer
        from monai.transforms import (
            AsDiscreted,
            Compose,
            Invertd,
            Orientationd,
            ScaleIntensityRanged,
            Spacingd,
        )
        from monai.utils import convert_to_dst_type

        pre = Compose([
            Orientationd("image", axcodes="RAS", labels=None),
            Spacingd("image", pixdim=PIXDIM, mode="bilinear"),
            ScaleIntensityRanged("image", **WINDOW),
        ])
        d = pre({"image": volume})
        with torch.inference_mode():
            logits = SliceInferer(roi_size=(roi, roi), sw_batch_size=sw_batch, overlap=0.25, spatial_dim=2,
                                  mode="gaussian")(d["image"].as_tensor()[None], net)
            probs = torch.softmax(logits[0], dim=0)
        del logits
        d["pred"] = convert_to_dst_type(probs, d["image"])[0]
        d = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
        d = AsDiscreted("pred", argmax=True)(d)
        mask = d["pred"]
        assert isinstance(mask, MetaTensor)
    seconds = time.perf_counter() - t0
    assert tuple(mask.shape[1:]) == tuple(volume.shape[1:])
    return {
        "config": config, "slices": n_slices, "shape": list(volume.shape[1:]), "params_m": round(params / 1e6, 3),
        "seconds": round(seconds, 2), "slices_per_s": round(n_slices / seconds, 3),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_added_by_inference_mb": None if rss_before is None else round(_status_mb("VmHWM") - rss_before, 1),
        "volume_mb": round(volume.numel() * 4 / 2**20, 1), "threads": threads, "roi": roi,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200,600", help="slice counts (comma-separated)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--crop", type=int, default=None, help="centre-crop slices to N x N source voxels (faster)")
    ap.add_argument("--roi", type=int, default=256, help="in-plane window (model voxels)")
    ap.add_argument("--sw-batch-size", type=int, default=8)
    ap.add_argument("--slab-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        config, n = args.child.split(":")
        print(json.dumps(child(config, int(n), args.crop, args.roi, args.sw_batch_size, args.slab_size, args.threads)))
        return 0
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for config in args.configs.split(","):
            cmd = [sys.executable, __file__, "--child", f"{config}:{n}", "--roi", str(args.roi),
                   "--sw-batch-size", str(args.sw_batch_size), "--slab-size", str(args.slab_size),
                   "--threads", str(args.threads)] + (["--crop", str(args.crop)] if args.crop else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{config} {n}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{r['config']:>10} {n:>4} slices {r['shape']}: {r['seconds']:8.1f} s  {r['slices_per_s']:6.2f} slices/s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB  (+{r['rss_added_by_inference_mb'] or 0:.0f} MB by inference; "
                  f"volume {r['volume_mb']:.0f} MB)", flush=True)
    by = {(r["config"], r["slices"]): r for r in results}
    print("\nratios (m2f-slab / unet-slab, m2f-slab / unet-monai; time and inference RSS):")
    for n in sorted({r["slices"] for r in results}):
        m = by.get(("m2f-slab", n))
        for other in ("unet-slab", "unet-monai"):
            o = by.get((other, n))
            if m and o:
                print(f"  {n:>4} slices vs {other:>10}: time x{m['seconds'] / o['seconds']:.2f}, "
                      f"added RSS x{(m['rss_added_by_inference_mb'] or 0) / max(o['rss_added_by_inference_mb'] or 0, 1):.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
