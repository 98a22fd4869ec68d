"""Train and evaluate issue 11's comparison: Mask2Former 2.5D, Mask2Former 2D and MONAI UNet 2.5D, two seeds each.

    cd bundles/m2f_ct_organs
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 15 python scripts/compare_models.py            # train + evaluate
    python scripts/compare_models.py --evaluate-only                                                # evaluate finished runs
    python scripts/compare_models.py --table-only [--update-docs]                                  # print / write the table

Every run is ``python -m monai.bundle run`` of ``configs/train.yaml`` + ``train_default_model.yaml`` +
``train_all_data.yaml`` (+ ``unet_baseline.yaml`` for the UNet; ``--num_context_slices 0`` for 2D): all
labelled CT of ``datalist.json`` with partial labels, the same augmentation, optimiser, schedule, number of
iterations and seeds for every model. The ``*_ct1`` runs train on the fully labelled CT alone
(``--train#datalist`` = the first training case, the data of the shipped model), to see what the partially
labelled crops add. The evaluated weights are the **last epoch's**, fixed before any run
(the only validation case, a 3-slice liver, cannot rank checkpoints: see docs/README.md). Each run's CPU
time (user + system of the child) is appended to ``runs/compare/runs.jsonl``.

Evaluation goes through the path of ``m2f-med predict`` (``load_bundle`` + ``predict_volume``, the bundle's
defaults: whole-slice plan, largest component per organ) on the held-out ``test`` scan and the
``validation`` case, Dice (MONAI ``DiceMetric``) and HD95 in mm (MONAI ``compute_hausdorff_distance`` with
the voxel spacing) on the scan's own grid, for the classes the reference labels in the field of view.
Results: ``runs/compare/<run>/eval.json`` and ``runs/compare/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1]
OUT = BUNDLE / "runs" / "compare"
CONFIGS = ["configs/train.yaml", "configs/train_default_model.yaml", "configs/train_all_data.yaml"]
MODELS = {"m2f_k1": "Mask2Former 2.5D (k = 1)", "m2f_k0": "Mask2Former 2D (k = 0)", "unet_k1": "MONAI UNet 2.5D (k = 1)",
          "m2f_k1_ct1": "Mask2Former 2.5D (k = 1)", "m2f_k0_ct1": "Mask2Former 2D (k = 0)",
          "unet_k1_ct1": "MONAI UNet 2.5D (k = 1)"}
# ``*_ct1``: trained on the first training case alone (the data of the shipped 0.2.0 model), same recipe
ONE_CT = "$m2f_bundle.load_datalist(@datalist, 'training', @dataset_dir)[:1]"
SEEDS = (42, 7)
ORGANS = ("liver", "spleen", "stomach", "aorta", "pancreas", "inferior_vena_cava")


def run_names() -> list[str]:
    """``m2f_k1_s42, m2f_k0_s42, unet_k1_s42, m2f_k1_ct1_s42, ...``: one run per model, data and seed."""
    return [f"{m}_s{s}" for s in SEEDS for m in MODELS]


def _model(run: str) -> str:
    return run.rsplit("_s", 1)[0]


def train_command(run: str) -> list[str]:
    """The ``monai.bundle run`` command line of one training run."""
    model, seed = _model(run), run.rsplit("_s", 1)[1]
    configs = CONFIGS + (["configs/unet_baseline.yaml"] if model.startswith("unet") else [])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", ".", "--run_name", run,
           "--config_file", repr(configs), "--seed", seed]
    if model.startswith("m2f_k0"):
        cmd += ["--num_context_slices", "0"]
    if model.endswith("_ct1"):
        cmd += ["--train#datalist", ONE_CT]
    return cmd


def train(run: str) -> dict:
    """Train one run, keep its last epoch's weights in ``runs/<run>/final/model.pt``; returns its record."""
    import torch

    cmd = train_command(run)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{run}.log", "w") as log:
        rc = subprocess.call(cmd, cwd=BUNDLE, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {"run": run, "rc": rc, "command": " ".join(cmd[1:]), "wall_s": round(time.time() - t0, 1),
              "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
              "peak_rss_gb": round(after.ru_maxrss / 2**20, 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if rc == 0:
        ckpts = sorted((BUNDLE / "runs" / run / "models").glob("checkpoint_epoch=*.pt"),
                       key=lambda p: int(p.stem.split("=")[1]))
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["model"]
        final = BUNDLE / "runs" / run / "final" / "model.pt"
        final.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, final)
        record["weights"] = str(final.relative_to(BUNDLE))
        record["epoch"] = int(ckpts[-1].stem.split("=")[1])
    with open(OUT / "runs.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def run_bundle(run: str) -> Path:
    """A bundle folder for one run: this bundle's inference config with the run's network and weights."""
    from monai.bundle import ConfigParser

    model = _model(run)
    root = OUT / run / "bundle"
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    parser = ConfigParser()
    files = [str(BUNDLE / "configs" / "inference.yaml")]
    if model.startswith("unet"):
        files.append(str(BUNDLE / "configs" / "unet_baseline.yaml"))
    parser.read_config(files)
    parser["num_context_slices"] = 0 if model.startswith("m2f_k0") else 1
    parser["ckpt_path"] = "$@bundle_root + '/models/model.pt'"
    parser.export_config_file(parser.get(), str(root / "configs" / "inference.yaml"), fmt="yaml")
    shutil.copy(BUNDLE / "configs" / "metadata.json", root / "configs" / "metadata.json")
    shutil.copy(BUNDLE / "runs" / run / "final" / "model.pt", root / "models" / "model.pt")
    return root


def score(mask, ref, labels: dict[int, str], names: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Dice and HD95 (mm) per named class present in the reference; ``None`` HD95 where nothing is predicted."""
    import torch
    from monai.metrics import DiceMetric, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    k = len(labels)
    pred = one_hot(torch.as_tensor(np.asarray(mask)).long()[None], k + 1)
    gt = one_hot(torch.as_tensor(np.asarray(ref)).long()[None], k + 1)
    dice = DiceMetric(include_background=False, reduction="none")(pred, gt)[0]
    spacing = [float(s) for s in np.linalg.norm(np.asarray(mask.affine)[:3, :3], axis=0)]
    out = {}
    for c, name in labels.items():
        if name not in names or not gt[0, c].any():
            continue
        hd = None
        if pred[0, c].any():
            hd = float(compute_hausdorff_distance(pred[:, c:c + 1], gt[:, c:c + 1], percentile=95, spacing=spacing)[0, 0])
        out[name] = {"dice": round(float(dice[c - 1]), 4), "hd95_mm": None if hd is None else round(hd, 1)}
    return out


def score_case(model, case: dict, labels: dict, names: tuple[str, ...]) -> tuple[dict, float]:
    """One labelled case through predict's path (``predict_volume``, the bundle's defaults), scored by
    :func:`score` on the case's own grid; returns ``(scores, inference CPU seconds)``. ``labels``: the
    datalist's top-level names, for a case without its own ``label_names``."""
    from monai.transforms import ResampleToMatch

    from m2f_med.bundle.label_io import load_label
    from m2f_med.bundle.labels import mapping_by_name
    from m2f_med.data import data_dir
    from m2f_med.inference.volume import predict_volume
    from m2f_med.io import load_volume
    from m2f_med.transforms.labels import RemapLabels

    volume = load_volume(data_dir(required=True) / case["image"])
    t0 = time.process_time()
    mask, _ = predict_volume(volume, model)
    cpu = time.process_time() - t0
    ref, _ = load_label(data_dir(required=True) / case["label"], volume)
    ref = ResampleToMatch(mode="nearest")(ref, mask)
    ref = RemapLabels(mapping_by_name(case.get("label_names", labels), model.labels))(ref)
    return score(mask, ref, model.labels, names), cpu


def evaluate(run: str) -> dict:
    """The run's last-epoch model on the datalist's ``test`` and ``validation`` cases, via predict's path."""
    import torch

    from m2f_med.inference.bundle_model import load_bundle

    torch.set_num_threads(1)
    datalist = json.loads((BUNDLE / "configs" / "datalist.json").read_text())
    model = load_bundle(run_bundle(run), device="cpu")
    result = {"run": run}
    for section in ("test", "validation"):
        for case in datalist[section]:
            scores, cpu = score_case(model, case, datalist["labels"], ORGANS)
            result.setdefault(section, {})[case["image"]] = {"scores": scores, "inference_cpu_s": round(cpu, 1)}
    (OUT / run / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def table() -> tuple[dict, str]:
    """Mean ± sample std over seeds per model and organ (test scan), per-run rows; returns (summary, Markdown)."""
    records = {}
    if (OUT / "runs.jsonl").is_file():
        for line in (OUT / "runs.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["rc"] == 0:
                records[rec["run"]] = rec
    evals = {r: json.loads((OUT / r / "eval.json").read_text()) for r in run_names() if (OUT / r / "eval.json").is_file()}

    def test_scores(ev):
        return next(iter(ev["test"].values()))["scores"]

    def fmt(values):
        values = [v for v in values if v is not None]
        if not values:
            return "–"
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    summary: dict = {}
    lines = ["| model | training data | seeds | " + " | ".join(o.replace("inferior_vena_cava", "IVC") for o in ORGANS) +
             " | mean | train CPU (min/run) |", "|---" * (len(ORGANS) + 5) + "|"]
    for model, title in MODELS.items():
        runs = [r for r in run_names() if _model(r) == model and r in evals]
        if not runs:
            continue
        per = {o: [test_scores(evals[r]).get(o, {}).get("dice") for r in runs] for o in ORGANS}
        means = [float(np.mean([test_scores(evals[r])[o]["dice"] for o in ORGANS if o in test_scores(evals[r])]))
                 for r in runs]
        summary[model] = {"runs": runs, "dice": per, "mean_dice": means,
                          "hd95_mm": {o: [test_scores(evals[r]).get(o, {}).get("hd95_mm") for r in runs] for o in ORGANS},
                          "train_cpu_s": [records.get(r, {}).get("cpu_s") for r in runs]}
        cpu = ", ".join(f"{records[r]['cpu_s'] / 60:.1f}" for r in runs if r in records)
        seeds = ", ".join(r.rsplit("_s", 1)[1] for r in runs)
        data = "fully labelled CT" if model.endswith("_ct1") else "all 3 cases, partial labels"
        lines.append(f"| {title} | {data} | {seeds} | " + " | ".join(fmt(per[o]) for o in ORGANS) +
                     f" | {fmt(means)} | {cpu} |")
    lines += ["", "| run | " + " | ".join(o.replace("inferior_vena_cava", "IVC") for o in ORGANS) +
              " | mean | HD95 liver / spleen / aorta / IVC (mm) | validation liver | train CPU s | train wall s | peak RSS GB |",
              "|---" * (len(ORGANS) + 7) + "|"]
    for r, ev in evals.items():
        s = test_scores(ev)
        d = [s.get(o, {}).get("dice") for o in ORGANS]
        hd = " / ".join("–" if s.get(o, {}).get("hd95_mm") is None else f"{s[o]['hd95_mm']:.1f}"
                        for o in ("liver", "spleen", "aorta", "inferior_vena_cava"))
        val = next(iter(ev["validation"].values()))["scores"].get("liver", {}).get("dice")
        rec = records.get(r, {})
        lines.append(f"| {r} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in d) +
                     f" | {np.mean([v for v in d if v is not None]):.3f} | {hd} | {val:.3f} | {rec.get('cpu_s', '–')} | "
                     f"{rec.get('wall_s', '–')} | {rec.get('peak_rss_gb', '–')} |")
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary, text


def update_docs(text: str) -> None:
    """Put the table between the ``issue11-table`` markers of docs/README.md."""
    readme = BUNDLE / "docs" / "README.md"
    doc = readme.read_text()
    start, end = "<!-- issue11-table -->", "<!-- /issue11-table -->"
    head, rest = doc.split(start, 1)
    readme.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(run_names()))
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        for run in args.runs.split(","):
            final = BUNDLE / "runs" / run / "final" / "model.pt"
            if not args.evaluate_only and not final.is_file():
                if train(run)["rc"] != 0:
                    print(f"{run}: training failed, see {OUT / (run + '.log')}", file=sys.stderr)
                    continue
            if final.is_file():
                evaluate(run)
    _, text = table()
    if args.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
