"""Speed and memory of the Mask2Former presets next to MONAI's 2D UNet and SwinUNETR, measured in one run.

For each model and slice size (default 256² and 512²) it prints:

* forward: one inference forward (eval, no grad) of a batch, ms; for Mask2Former this includes the
  full-resolution post-processing (:class:`~m2f_med.networks.SemanticProbabilities`), i.e. what the
  sliding-window inferer calls;
* train step: forward + loss + backward + AdamW step, ms (Mask2Former: HF's Hungarian loss via
  :class:`~m2f_med.networks.Mask2FormerLoss`; baselines: MONAI ``DiceCELoss``);
* peak memory of one train step, MiB, above what is held before it (weights, optimizer state, inputs):
  on CUDA from ``torch.cuda.max_memory_allocated``; on CPU the rise of the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed so freed tensors
  leave the resident set);
* ratios of each Mask2Former preset to the baselines of similar size (``small`` ~1.6 M parameters for
  ``tiny``; ``large``, MONAI's biggest usual configurations of ~25 M, for ``swin_t`` / ``resnet50``).

On CPU only ``tiny`` and the small baselines run unless ``--presets`` / ``--baselines`` name more (the GPU
presets take minutes per step on 2 cores). Inputs are synthetic (random image, rectangles as labels):
speed does not depend on content, except the loss, which depends on the number of objects (4 here).

Usage::

    python benchmarks/bench_networks.py                       # CPU: tiny vs small baselines, 256² and 512²
    python benchmarks/bench_networks.py --device cuda --amp   # all presets and baselines, bf16 autocast
    python benchmarks/bench_networks.py --sizes 256 --batch 4 --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import SwinUNETR, UNet

from m2f_med.networks import PRESETS, Mask2FormerLoss, Mask2FormerNet, SemanticProbabilities

GROUP = {"tiny": "small", "swin_t": "large", "resnet50": "large"}
BASELINES = {
    "unet_small": (
        "small",
        lambda c, k: UNet(2, c, k + 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
    ),
    "swinunetr_small": (
        "small",
        lambda c, k: SwinUNETR(in_channels=c, out_channels=k + 1, feature_size=12, spatial_dims=2),
    ),
    "unet_large": (
        "large",
        lambda c, k: UNet(2, c, k + 1, (64, 128, 256, 512, 1024), (2, 2, 2, 2), num_res_units=2),
    ),
    "swinunetr_large": (
        "large",
        lambda c, k: SwinUNETR(in_channels=c, out_channels=k + 1, feature_size=48, spatial_dims=2),
    ),
}


def _fixed_mmap_threshold() -> None:
    """Make glibc return freed tensor memory to the OS at once, so the resident set tracks live memory.

    By default glibc raises its mmap threshold after large frees and keeps later buffers in the heap, so a
    second train step reuses memory the resident set already counts and its peak rise reads near zero.
    ``mallopt(M_MMAP_THRESHOLD = -3, 128 KiB)`` fixes the threshold. It slows allocation-heavy models
    (SwinUNETR train step 3-4x), so CPU memory is measured in a second pass after all timings.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a block, MiB: CUDA allocator peak, or CPU peak-RSS rise (Linux ``VmHWM``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back free heap pages kept from earlier work
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self.mib = (_rss_kib("VmHWM") * 1024 - self.base) / 2**20
        return False


def _batch(batch: int, channels: int, classes: int, size: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, channels, size, size, generator=gen)
    label = torch.zeros(batch, 1, size, size)
    s = size // 8
    for k in range(1, classes + 1):  # one rectangle per class, shifted per class
        label[:, :, k * s : k * s + 2 * s, (k - 1) * s + s : (k - 1) * s + 3 * s] = k
    return image.to(device), label.to(device)


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _build(name: str, args):
    """``(network, loss, inference module, group)`` of a preset or baseline, seeded."""
    torch.manual_seed(0)
    if name in PRESETS:
        net = Mask2FormerNet(preset=name, in_channels=args.channels, num_classes=args.classes)
        loss_fn = Mask2FormerLoss(num_classes=args.classes, preset=name)
        return net, loss_fn, SemanticProbabilities(net), GROUP[name]
    group, build = BASELINES[name]
    net = build(args.channels, args.classes)
    return net, DiceCELoss(to_onehot_y=True, softmax=True), net, group


def measure(
    name: str, args, size: int, device: torch.device, timing: bool = True, memory: bool = True
) -> dict:
    """Forward and train-step time (ms, median) and peak train-step memory (MiB) of one model at one size."""
    net, loss_fn, infer, group = _build(name, args)
    image, label = _batch(args.batch, args.channels, args.classes, size, device)
    net = net.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    amp = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.amp and device.type == "cuda"
        else contextlib.nullcontext()
    )

    def forward():
        infer.eval()
        with torch.no_grad(), amp:
            infer(image)

    def train_step():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        with amp:
            out = net(image)
            loss = loss_fn(out, label)
        loss.backward()
        optimizer.step()

    row = {"model": name, "group": group, "size": size}
    row["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
    if timing:
        row["forward_ms"] = round(_timed(forward, device, args.repeats, args.warmup), 1)
        row["train_ms"] = round(_timed(train_step, device, args.repeats, args.warmup), 1)
    if memory:
        train_step()  # optimizer state exists before the memory window
        with PeakMemory(device) as peak:
            train_step()
        row["peak_mib"] = round(peak.mib, 1)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--presets", nargs="*", default=None, help=f"of {sorted(PRESETS)}; CPU default: tiny")
    parser.add_argument("--baselines", nargs="*", default=None, help=f"of {sorted(BASELINES)}")
    parser.add_argument("--sizes", nargs="*", type=int, default=[256, 512])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=3, help="C = modalities x (2k + 1)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (2 shared cores: 1 is steadier)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (CPU stays fp32)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    presets = args.presets if args.presets is not None else (sorted(PRESETS) if on_gpu else ["tiny"])
    groups = {GROUP[p] for p in presets}
    baselines = (
        args.baselines
        if args.baselines is not None
        else [b for b, (g, _) in BASELINES.items() if g in groups]
    )
    skipped = [p for p in PRESETS if p not in presets]
    print(
        f"# device {device} ({torch.cuda.get_device_name(device) if on_gpu else platform.processor() or 'cpu'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, C {args.channels}, "
        f"K {args.classes}, amp {'bf16' if args.amp and on_gpu else 'off'}"
    )
    if skipped:
        print(f"# skipped presets (name them with --presets to run): {', '.join(skipped)}")

    names = list(presets) + list(baselines)
    rows = []
    for size in args.sizes:
        for name in names:
            rows.append(measure(name, args, size, device, memory=device.type == "cuda"))
            if device.type == "cuda":
                print(json.dumps(rows[-1]), flush=True)
    if device.type == "cpu":
        # memory in a second pass: the fixed mmap threshold it needs slows some models' timings
        _fixed_mmap_threshold()
        for row in rows:
            row["peak_mib"] = measure(row["model"], args, row["size"], device, timing=False)["peak_mib"]
            print(json.dumps(row), flush=True)

    print(
        f"\n{'model':<16}{'size':>6}{'params M':>10}{'fwd ms':>10}{'train ms':>10}{'peak MiB':>10}  ratios (fwd / train / mem)"
    )
    for row in rows:
        ratios = ""
        if row["model"] in PRESETS:
            refs = [
                r
                for r in rows
                if r["size"] == row["size"] and r["group"] == row["group"] and r["model"] in BASELINES
            ]
            ratios = "  ".join(
                f"vs {r['model']}: {row['forward_ms'] / r['forward_ms']:.1f}x / {row['train_ms'] / r['train_ms']:.1f}x"
                f" / {row['peak_mib'] / r['peak_mib']:.1f}x"
                for r in refs
                if r["forward_ms"] and r["train_ms"] and r["peak_mib"]
            )
        print(
            f"{row['model']:<16}{row['size']:>6}{row['params_m']:>10}{row['forward_ms']:>10}{row['train_ms']:>10}"
            f"{row['peak_mib']:>10}  {ratios}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
