"""How well a model fits its own fully labelled training scan: per-organ Dice and HD95, through predict's path.

    cd bundles/m2f_ct_organs
    OMP_NUM_THREADS=1 python scripts/training_fit.py                              # the shipped models/model.pt
    OMP_NUM_THREADS=1 python scripts/training_fit.py --bundle runs/compare/<run>/bundle

A diagnostic, not a quality figure: the scan (the first ``training`` case of datalist.json, the
TotalSegmentator example CT) is what the model was trained on. An organ the model misses *here* was not
learned at all (budget, capacity, loss), which no augmentation or validation choice can fix on other scans.
Evaluation as in compare_models.py (``load_bundle`` + ``predict_volume`` with the bundle's defaults, MONAI
Dice and HD95 on the scan's own grid), for every model class the reference labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BUNDLE / "scripts"))

from compare_models import score_case  # noqa: E402


def main() -> None:
    import torch

    from m2f_med.inference.bundle_model import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(BUNDLE), help="a bundle folder (default: this bundle, models/model.pt)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    datalist = json.loads((BUNDLE / "configs" / "datalist.json").read_text())
    case = datalist["training"][0]
    model = load_bundle(args.bundle, device="cpu")
    scores, _ = score_case(model, case, datalist["labels"], tuple(model.labels.values()))
    print(json.dumps({"scan": case["image"], "bundle": args.bundle, "scores": scores}, indent=1))


if __name__ == "__main__":
    main()
