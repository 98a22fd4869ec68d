"""Train the runs behind docs/README.md: the final model on all 19 patients, then 5 folds x 2 models.

    cd bundles/m2f_ct_lesions
    OMP_NUM_THREADS=1 nice -n 15 python scripts/cross_validate.py [--runs final,m2f_f0,unet_f0,...]
    OMP_NUM_THREADS=1 nice -n 15 python scripts/cross_validate.py --tags s43   # the fold runs again, seed 43

Every run is ``python -m monai.bundle run`` of configs/train.yaml (plus configs/unet_baseline.yaml for the
MONAI UNet) with the same CPU budget (``--max_epochs`` x ``--iterations_per_epoch`` iterations of 8 slices, more
for the cheaper UNet iteration; see BUDGETS), data, augmentation and seed; fold runs choose their checkpoint on the fold's validation patients only
(``best_model_saver`` on val_mean_dice). The final run has no validation: it keeps the last epoch, whose
model weights are written to runs/final/models/model.pt. Each run's CPU time (user + system of the child
process) and wall time are appended to runs/cv/runs.jsonl. Test folds are evaluated by
scripts/evaluate_cv.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

BUNDLE = Path(__file__).resolve().parents[1]
# Equal CPU time, not equal iterations: a UNet epoch costs about 0.7x a Mask2Former one here (7.2 vs 10.4 CPU-s
# for 50 iterations, validation included, measured on fold 0), so the UNet gets about 1.45x the epochs.
# 60 Mask2Former epochs (2x the first version's 30): fold 0's validation Dice still rose at 45 epochs (0.29 at
# epoch 3, 0.47 at 39); more did not fit the session's CPU time.
BUDGETS = {"m2f": {"max_epochs": 60, "iterations_per_epoch": 50, "val_interval": 3},
           "unet": {"max_epochs": 87, "iterations_per_epoch": 50, "val_interval": 3}}


def budget(name: str) -> dict:
    """The budget of one run: ``final`` trains the Mask2Former recipe."""
    return BUDGETS["unet" if name.startswith("unet") else "m2f"]


def run_names(tags: str = "") -> list[str]:
    """``final`` first (the shipped model), then ``m2f_f0, unet_f0, ..., unet_f4``.

    With ``tags`` (e.g. ``"s43"`` for another seed than train.yaml's 42, ``"k3"`` for 3 context slices per
    side, or ``"k3_s43"``): only the fold runs, named ``m2f_f0_<tags>, ...``.
    """
    if not tags:
        return ["final"] + [f"{m}_f{f}" for f in range(5) for m in ("m2f", "unet")]
    return [f"{m}_f{f}_{tags}" for f in range(5) for m in ("m2f", "unet")]


def parse_run(name: str) -> tuple[str, int | None, dict]:
    """``"unet_f3_k3_s43"`` -> ``("unet", 3, {"seed": 43, "num_context_slices": 3})``; ``"final"`` -> no fold.

    Tags after the fold: ``s<N>`` the seed, ``k<N>`` the context slices per side (``num_context_slices``);
    both default to train.yaml's (42 and 1).

    Raises:
        SystemExit: a name of another form.
    """
    if name == "final":
        return name, None, {}
    parts = name.split("_")
    overrides: dict = {}
    try:
        model, fold = parts[0], int(parts[1].removeprefix("f"))
        for tag in parts[2:]:
            key = {"s": "seed", "k": "num_context_slices"}[tag[0]]
            overrides[key] = int(tag[1:])
    except (IndexError, KeyError, ValueError):
        model = ""
    if model not in BUDGETS or not parts[1].startswith("f"):
        raise SystemExit(f"run name {name!r} is not final or <model>_f<fold>[_s<seed>][_k<context>]")
    return model, fold, overrides


def command(name: str) -> list[str]:
    """The ``monai.bundle run`` command line of one run."""
    model, fold, overrides = parse_run(name)
    configs = ["configs/train.yaml"] + (["configs/unet_baseline.yaml"] if model == "unet" else [])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", ".", "--run_name", name,
           "--config_file", repr(configs)]
    for key, value in budget(name).items():
        cmd += [f"--{key}", str(value)]
    if fold is not None:
        cmd += ["--fold", str(fold)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def final_weights(run_dir: Path) -> Path:
    """Write the last epoch's model weights of a run without validation to ``models/model.pt``."""
    ckpts = sorted(run_dir.glob("models/checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    if not ckpts:
        raise SystemExit(f"{run_dir}: no checkpoint written")
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["model"]
    out = run_dir / "models" / "model.pt"
    torch.save(state, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=None, help="comma-separated run names (default: every run)")
    parser.add_argument("--tags", default="",
                        help="the fold runs again with other settings, e.g. s43 (seed 43), k3 (3 context slices "
                             "per side) or k3_s43: runs <model>_f<fold>_<tags>")
    args = parser.parse_args()
    args.runs = args.runs or ",".join(run_names(args.tags))
    log = BUNDLE / "runs" / "cv" / "runs.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    for name in args.runs.split(","):
        cmd = command(name)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        with open(BUNDLE / "runs" / "cv" / f"{name}.log", "w") as out:
            rc = subprocess.call(cmd, cwd=BUNDLE, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        record = {
            "run": name,
            "rc": rc,
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "wall_s": round(time.time() - t0, 1),
            "command": " ".join(cmd[1:]),
            "budget": budget(name),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if rc == 0 and name == "final":
            record["weights"] = str(final_weights(BUNDLE / "runs" / name))
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
