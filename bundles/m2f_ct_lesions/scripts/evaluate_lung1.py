"""Local check of the shipped model on a whole CT: LUNG1-001 (NSCLC-Radiomics, CC BY-NC 3.0: local only).

    cd bundles/m2f_ct_lesions && OMP_NUM_THREADS=1 python scripts/evaluate_lung1.py

The shipped model was trained on soft-tissue-sarcoma crops only (5 cm around each tumour), so this is a
whole thorax it has never seen anything like: reports the GTV (label 4) Dice, whether the GTV is detected
(IoU > 0.1), the number of false-positive lesions with their volumes, and the QC verdict each lesion gets
(``m2f_med.inference.lesion_qc``, as ``m2f-med predict`` writes it). Writes runs/cv/lung1_001.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from m2f_med.data import data_dir
from m2f_med.evaluation import lesion_metrics, reference_instances
from m2f_med.inference.bundle_model import load_bundle
from m2f_med.inference.instances import instance_table, predict_instances
from m2f_med.inference.lesion_qc import lesion_quality_control
from m2f_med.io import load_volume

BUNDLE = Path(__file__).resolve().parents[1]


def main() -> None:
    base = data_dir(required=True) / "tcia" / "nsclc_radiomics_LUNG1-001" / "derived_nifti"
    image = load_volume(base / "lung1_001_ct.nii.gz")
    label = np.asarray(load_volume(base / "lung1_001_label.nii.gz")[0])
    model = load_bundle(BUNDLE)
    t0 = time.process_time()
    inst, info = predict_instances(image, model)
    cpu = time.process_time() - t0
    ref = reference_instances(label == 4)
    m = lesion_metrics(inst.instance_map, ref)
    rows = instance_table(inst, image, model.labels, low_score=model.instance_settings.low_score)
    # the QC that m2f-med predict attaches (m2f_med.inference.lesion_qc): what a reader of the output is told
    rows, qc_scan = lesion_quality_control(rows, inst.instance_map, np.asarray(image[0]), np.asarray(image.affine),
                                           model.lesion_qc, modality="CT")
    result = {
        "case": "LUNG1-001 whole CT (512x512x134 @0.977x0.977x3 mm), reference GTV = label 4 (manual)",
        "gtv_dice": m.dice, "gtv_detected": bool(m.tp), "tp": m.tp, "fp": m.fp, "fn": m.fn,
        "predicted_lesions": len(rows), "gtv_ml": float((ref > 0).sum() * np.prod(image.pixdim.numpy()) / 1000),
        "lesions": [{"id": r["id"], "score": r["score"], "volume_ml": r["volume_ml"],
                     "mean_hu": r["mean_intensity"], "centroid_lps_mm": r["centroid_lps_mm"],
                     "voxels_on_gtv": int(((inst.instance_map == r["id"]) & (ref > 0)).sum()),
                     "qc": r["qc"], "qc_reasons": r["qc_reasons"]} for r in rows],
        "qc_scan": qc_scan,
        "inference_cpu_s": round(cpu, 1), "rule": info["rule"],
    }
    out = BUNDLE / "runs" / "cv" / "lung1_001.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))


if __name__ == "__main__":
    main()
