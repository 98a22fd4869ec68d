"""Time and memory of the m2f_ct_organs bundle with its default settings on this machine.

Runs ``configs/train.yaml`` through MONAI's ``ConfigWorkflow`` on the real datalist (``configs/datalist.json``,
data from ``$M2F_MED_DATA`` or ``../shared/data``) for a few iterations with whole-volume validation, then
``configs/inference.yaml`` on the held-out DICOM series, and prints seconds per training iteration, per
validation volume, per inference volume and the peak resident memory. Outputs go to a temporary folder.

    .venv/bin/python benchmarks/bench_bundle.py --iterations 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parent.parent / "bundles" / "m2f_ct_organs"


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10, help="training iterations (one epoch)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0: train.yaml's num_threads rule)")
    args = parser.parse_args()
    if args.threads:  # 0: the config's own rule (m2f_med.threads)
        torch.set_num_threads(args.threads)
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    out = Path(tempfile.mkdtemp(prefix="bench_bundle_"))
    common = {
        "bundle_root": str(BUNDLE),
        "ckpt_dir": str(out / "models"),
        "log_dir": str(out / "logs"),
        "output_dir": str(out / "eval"),
    }
    train = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.yaml"),
        workflow_type="train",
        max_epochs=1,
        iterations_per_epoch=args.iterations,
        val_interval=1,
        num_threads=args.threads,
        **common,
    )
    t0 = time.perf_counter()
    train.initialize()
    t_cache = time.perf_counter() - t0
    trainer = train.parser.get_parsed_content("train#trainer")
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    marks: dict[str, float] = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: marks.setdefault("train0", time.perf_counter()))
    evaluator.add_event_handler(Events.STARTED, lambda e: marks.setdefault("val0", time.perf_counter()))
    evaluator.add_event_handler(Events.COMPLETED, lambda e: marks.setdefault("val1", time.perf_counter()))
    train.run()
    train.finalize()
    n_val = len(train.parser.get_parsed_content("validate#datalist"))
    result = {
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "cache_volumes_s": round(t_cache, 1),
        "train_s_per_iteration": round((marks["val0"] - marks["train0"]) / args.iterations, 2),
        "slices_per_iteration": train.parser.get_parsed_content("train#num_samples")
        * train.parser.get_parsed_content("train#batch_size"),
        "validation_s_per_volume": round((marks["val1"] - marks["val0"]) / max(n_val, 1), 2),
    }
    infer = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        workflow_type="infer",
        ckpt_path=str(out / "models" / "model.pt"),
        bundle_root=str(BUNDLE),
        output_dir=str(out / "pred"),
    )
    infer.initialize()
    t1 = time.perf_counter()
    infer.run()
    result["inference_s_per_volume"] = round(
        (time.perf_counter() - t1) / max(len(infer.parser.get_parsed_content("data")), 1), 2
    )
    infer.finalize()
    result["peak_rss_gib"] = round(_peak_rss_gib(), 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
