"""Checkpoint rule and lesion score threshold of the cross-validation runs, chosen on validation patients only.

    cd bundles/m2f_ct_lesions
    OMP_NUM_THREADS=1 python scripts/evaluate_rules.py --tags s43     # runs <model>_f<fold>_s43
    OMP_NUM_THREADS=1 python scripts/evaluate_rules.py --tags k3      # runs <model>_f<fold>_k3
    OMP_NUM_THREADS=1 python scripts/evaluate_rules.py                # the runs <model>_f<fold>

For every finished fold run of scripts/cross_validate.py and both checkpoint rules

* ``best``: the checkpoint with the best validation Dice (``runs/<run>/models/model.pt``), as evaluate_cv.py;
* ``last``: the last epoch (``checkpoint_epoch=<max_epochs>.pt``), the rule of the shipped model (trained on
  all 19 patients for the same budget, no validation),

the model segments the fold's **validation** and **test** patients once (``predict_instances``, the path of
``m2f-med predict``, every lesion kept). Then a minimum lesion score ``t`` (bundle key
``instance_inference#instance_score_threshold``; for the UNet the same threshold on its components' mean
probability) is **chosen on the validation patients** from :data:`THRESHOLDS`: the highest validation lesion
F1, ties to the higher mean patient Dice, then to the lower threshold (the least filtering). The test
patients are scored at ``t = 0`` (no filtering, as evaluate_cv.py) and at the chosen ``t``; nothing about them
enters any choice. Writes runs/cv/rules[_<tags>].json and prints a table (means over the five folds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BUNDLE / "scripts"))

from cross_validate import BUDGETS, parse_run  # noqa: E402

THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def build_model(model: str, state: dict, fold: int, overrides: dict):
    """A BundleModel of the fold run's network (with the run's config ``overrides``) and evaluate.yaml's contract."""
    from monai.bundle import ConfigParser

    from m2f_med.inference.bundle_model import BundleModel

    configs = [BUNDLE / "configs" / "train.yaml"] + ([BUNDLE / "configs" / "unet_baseline.yaml"] if model == "unet" else [])
    configs.append(BUNDLE / "configs" / "evaluate.yaml")
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    parser["bundle_root"] = str(BUNDLE)
    parser["fold"] = fold
    for key, value in overrides.items():
        parser[key] = value
    network = parser.get_parsed_content("slice_network_def")
    network.load_state_dict(state, strict=True)
    settings = dict(parser.get_parsed_content("instance_inference"))
    settings["instance_score_threshold"] = 0.0  # every lesion kept; thresholds are applied afterwards
    return BundleModel(network=network.eval(), labels=parser.get_parsed_content("labels"),
                       num_context_slices=parser.get_parsed_content("num_context_slices"),
                       pixdim=parser.get_parsed_content("pixdim"), intensity=parser.get_parsed_content("intensity"),
                       thing_classes=tuple(parser.get_parsed_content("thing_classes")),
                       instance_settings=settings)


def checkpoint_state(run_dir: Path, rule: str) -> dict:
    """The network weights of a run under a checkpoint rule (``best`` or ``last``)."""
    if rule == "best":
        return torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
    ckpts = sorted(run_dir.glob("models/checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    if not ckpts:
        raise SystemExit(f"{run_dir}: no epoch checkpoint")
    return torch.load(ckpts[-1], map_location="cpu", weights_only=True)["model"]


def predictions(model, cases: list[dict]) -> list[tuple[np.ndarray, dict[int, float], np.ndarray]]:
    """Per case ``(instance map, {id: score}, reference instances)`` on the case's own grid."""
    from m2f_med.bundle.lesion_eval import predict_case_lesions

    return [predict_case_lesions(model, case) for case in cases]


def score(preds, threshold: float) -> dict:
    """Lesion metrics over the cases with lesions scoring below ``threshold`` removed."""
    from m2f_med.evaluation import lesion_metrics, summarise_lesion_metrics

    counts = []
    for pred, scores, ref in preds:
        drop = [i for i, s in scores.items() if s < threshold]
        kept = np.where(np.isin(pred, drop), 0, pred) if drop else pred
        counts.append(lesion_metrics(kept, ref))
    s = summarise_lesion_metrics(counts)
    return {k: s[k] for k in ("dice_mean", "f1", "pq", "tp", "fp", "fn", "sensitivity", "precision")}


def choose(val_preds) -> tuple[float, dict]:
    """The threshold with the best validation F1, then Dice, then the lowest threshold."""
    results = {t: score(val_preds, t) for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: (round(results[t]["f1"], 6), round(results[t]["dice_mean"], 6), -t))
    return best, results


def main() -> None:
    from m2f_med.bundle import fold_datalist
    from m2f_med.data import data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="", help="evaluate the runs <model>_f<fold>_<tags> (e.g. s43, k3)")
    parser.add_argument("--models", default="m2f,unet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suffix = f"_{args.tags}" if args.tags else ""
    datalist, folds = BUNDLE / "configs" / "datalist.json", BUNDLE / "configs" / "folds.json"
    out_path = BUNDLE / "runs" / "cv" / f"rules{suffix}.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for model in args.models.split(","):
        for fold in range(5):
            run = f"{model}_f{fold}{suffix}"
            run_dir = BUNDLE / "runs" / run
            last = run_dir / "models" / f"checkpoint_epoch={BUDGETS[model]['max_epochs']}.pt"
            if not last.is_file() or not (run_dir / "models" / "model.pt").is_file():
                print(f"{run}: not finished, skipped", flush=True)
                continue
            val = fold_datalist(datalist, folds, fold, "validation", data_dir())
            test = fold_datalist(datalist, folds, fold, "test", data_dir())
            for rule in ("best", "last"):
                key = f"{run}/{rule}"
                if key in results:
                    continue
                t0 = time.process_time()
                net = build_model(model, checkpoint_state(run_dir, rule), fold, parse_run(run)[2])
                val_preds, test_preds = predictions(net, val), predictions(net, test)
                chosen, val_results = choose(val_preds)
                results[key] = {"model": model, "fold": fold, "rule": rule, "threshold": chosen,
                                "validation": val_results[chosen], "validation_t0": val_results[0.0],
                                "test_t0": score(test_preds, 0.0), "test_chosen": score(test_preds, chosen),
                                "cpu_s": round(time.process_time() - t0, 1)}
                out_path.write_text(json.dumps(results, indent=1))
                r = results[key]
                print(f"{key}: t={chosen} test Dice {r['test_t0']['dice_mean']:.3f} F1 {r['test_t0']['f1']:.3f} -> "
                      f"F1 {r['test_chosen']['f1']:.3f} PQ {r['test_chosen']['pq']:.3f}", flush=True)
    print(table(results))


def table(results: dict) -> str:
    """Markdown: per model and checkpoint rule, the mean over folds at t = 0 and at the validation-chosen t."""
    lines = ["| model | checkpoint | lesion score threshold | folds | patient Dice | lesion F1 | PQ | TP / FP / FN |",
             "|---|---|---|---|---|---|---|---|"]
    for model in ("m2f", "unet"):
        for rule in ("best", "last"):
            rows = [r for r in results.values() if r["model"] == model and r["rule"] == rule]
            if not rows:
                continue
            for variant, label in (("test_t0", "none (0)"), ("test_chosen", "chosen on validation: " + "/".join(
                    str(r["threshold"]) for r in sorted(rows, key=lambda r: r["fold"])))):
                m = {k: float(np.mean([r[variant][k] for r in rows])) for k in ("dice_mean", "f1", "pq")}
                c = {k: sum(r[variant][k] for r in rows) for k in ("tp", "fp", "fn")}
                lines.append(f"| {model} | {rule} | {label} | {len(rows)} | {m['dice_mean']:.3f} | {m['f1']:.3f} | "
                             f"{m['pq']:.3f} | {c['tp']} / {c['fp']} / {c['fn']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
