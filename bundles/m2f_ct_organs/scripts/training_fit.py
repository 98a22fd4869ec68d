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

from compare_models import score  # noqa: E402


def main() -> None:
    import torch
    from monai.transforms import ResampleToMatch

    from m2f_med.bundle.label_io import load_label
    from m2f_med.bundle.labels import mapping_by_name
    from m2f_med.data import data_dir
    from m2f_med.inference.bundle_model import load_bundle
    from m2f_med.inference.volume import predict_volume
    from m2f_med.io import load_volume
    from m2f_med.transforms.labels import RemapLabels

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(BUNDLE), help="a bundle folder (default: this bundle, models/model.pt)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    datalist = json.loads((BUNDLE / "configs" / "datalist.json").read_text())
    case = datalist["training"][0]
    model = load_bundle(args.bundle, device="cpu")
    volume = load_volume(data_dir(required=True) / case["image"])
    mask, _ = predict_volume(volume, model)
    ref, _ = load_label(data_dir(required=True) / case["label"], volume)
    ref = ResampleToMatch(mode="nearest")(ref, mask)
    ref = RemapLabels(mapping_by_name(case.get("label_names", datalist["labels"]), model.labels))(ref)
    scores = score(mask, ref, model.labels, tuple(model.labels.values()))
    print(json.dumps({"scan": case["image"], "bundle": args.bundle, "scores": scores}, indent=1))


if __name__ == "__main__":
    main()
