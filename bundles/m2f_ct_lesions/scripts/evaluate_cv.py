"""Evaluate the cross-validation runs of scripts/cross_validate.py on their test folds and tabulate them.

    cd bundles/m2f_ct_lesions
    OMP_NUM_THREADS=1 python scripts/evaluate_cv.py            # evaluates every finished fold run
    python scripts/evaluate_cv.py --table-only                  # re-print the table from runs/cv/eval

Each finished run ``<model>_f<f>`` (its best checkpoint on the fold's validation patients,
runs/<run>/models/model.pt) is evaluated with configs/evaluate.yaml on the fold's test patients only
(``--fold f``), into runs/cv/eval/<run>/. The table gives per fold and as the mean over folds: mean
patient Dice, lesion F1 and PQ (pooled within the fold), and the run's training CPU time from
runs/cv/runs.jsonl. Writes runs/cv/cv_summary.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1]
CV = BUNDLE / "runs" / "cv"
MODELS = {"m2f": "Mask2Former 2.5D (tiny, k=1)", "unet": "MONAI UNet 2.5D (semantic, lesions = 3D components)"}


def evaluate(run: str) -> None:
    """``monai.bundle run`` of evaluate.yaml for one fold run."""
    model, fold = run.rsplit("_f", 1)
    configs = ["configs/train.yaml"] + (["configs/unet_baseline.yaml"] if model == "unet" else [])
    configs.append("configs/evaluate.yaml")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", ".", "--config_file", repr(configs),
           "--fold", fold, "--ckpt_path", f"runs/{run}/models/model.pt", "--output_dir", f"runs/cv/eval/{run}"]
    with open(CV / f"eval_{run}.log", "w") as out:
        subprocess.check_call(cmd, cwd=BUNDLE, stdout=out, stderr=subprocess.STDOUT)


def table() -> tuple[dict, str]:
    """Per-fold and mean figures of every evaluated run, as a dict and a Markdown table (also printed)."""
    cpu = {}
    if (CV / "runs.jsonl").is_file():
        for line in (CV / "runs.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec["rc"] == 0:
                cpu[rec["run"]] = rec["cpu_s"]
    out: dict = {}
    for model in MODELS:
        folds = {}
        for f in range(5):
            path = CV / "eval" / f"{model}_f{f}" / "lesion_summary.json"
            if path.is_file():
                s = json.loads(path.read_text())
                folds[f] = {"dice": s["dice_mean"], "f1": s["f1"], "pq": s["pq"], "sensitivity": s["sensitivity"],
                            "precision": s["precision"], "tp": s["tp"], "fp": s["fp"], "fn": s["fn"],
                            "patients": s["patients"], "train_cpu_s": cpu.get(f"{model}_f{f}")}
        if folds:
            out[model] = {"folds": folds, "folds_done": sorted(folds)}
    # means over the folds both models finished, so that the two rows compare like with like
    common = sorted(set.intersection(*(set(r["folds"]) for r in out.values()))) if out else []
    for r in out.values():
        r["mean_over_folds"] = common
        r["mean"] = {k: float(np.mean([r["folds"][f][k] for f in common])) if common else float("nan")
                     for k in ("dice", "f1", "pq")}
    lines = ["| model | fold | test patients | patient Dice | lesion F1 | PQ | TP / FP / FN | training CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for model, r in out.items():
        for f, v in r["folds"].items():
            lines.append(f"| {MODELS[model]} | {f} | {v['patients']} | {v['dice']:.3f} | {v['f1']:.3f} | "
                         f"{v['pq']:.3f} | {v['tp']} / {v['fp']} / {v['fn']} | {v['train_cpu_s']:.0f} |")
        m = r["mean"]
        lines.append(f"| {MODELS[model]} | **mean, folds {','.join(map(str, r['mean_over_folds']))}** | | **{m['dice']:.3f}** | **{m['f1']:.3f}** | "
                     f"**{m['pq']:.3f}** | | |")
    text = "\n".join(lines)
    print(text)
    (CV / "cv_summary.json").write_text(json.dumps(out, indent=2))
    return out, text


def update_docs(out: dict, text: str) -> None:
    """Put the table between the markers of docs/README.md and the means into metadata.json eval_metrics."""
    readme = BUNDLE / "docs" / "README.md"
    doc = readme.read_text()
    start, end = "<!-- cv-table -->", "<!-- /cv-table -->"
    head, rest = doc.split(start, 1)
    readme.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])
    meta_path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    metrics = {"evaluation": "5-fold patient-level cross-validation on 19 soft-tissue-sarcoma CT crops "
                             "(configs/folds.json), test folds only; see docs/README.md"}
    for model, r in out.items():
        metrics[f"{model}_folds_in_mean"] = r["mean_over_folds"]
        for k in ("dice", "f1", "pq"):
            metrics[f"{model}_cv_mean_{'patient_dice' if k == 'dice' else 'lesion_' + k if k == 'f1' else k}"] = round(r["mean"][k], 4)
    lung = CV / "lung1_001.json"
    if lung.is_file():
        d = json.loads(lung.read_text())
        metrics["lung1_001_whole_ct_gtv_dice"] = round(d["gtv_dice"], 4)
        metrics["lung1_001_whole_ct_false_positive_lesions"] = d["fp"]
    meta["eval_metrics"] = metrics
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--update-docs", action="store_true", help="write the table into docs/README.md and metadata.json")
    args = parser.parse_args()
    if not args.table_only:
        for model in MODELS:
            for f in range(5):
                run = f"{model}_f{f}"
                done = (BUNDLE / "runs" / run / "models" / "model.pt").is_file()
                evaluated = (CV / "eval" / run / "lesion_summary.json").is_file()
                finished = any(json.loads(line)["run"] == run and json.loads(line)["rc"] == 0
                               for line in (CV / "runs.jsonl").read_text().splitlines())
                if done and finished and not evaluated:
                    evaluate(run)
    out, text = table()
    if args.update_docs:
        update_docs(out, text)


if __name__ == "__main__":
    main()
