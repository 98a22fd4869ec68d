"""The shipped default model (bundles/m2f_ct_organs/models/model.pt) on its held-out real CT.

Runs ``m2f_med.inference`` with the default bundle on the TotalSegmentator example DICOM series (a
contrast-enhanced scan of another patient and scanner, never trained or tuned on) and compares per organ
with its reference, which is a TotalSegmentator model output, not a manual segmentation. The floors sit a
few points below the Dice reported in bundles/m2f_ct_organs/docs/README.md, so broken weights, a broken
pipeline (orientation, spacing, window, 2.5D stacking) or a wrong label order fail here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import ResampleToMatch

from m2f_med.bundle.labels import mapping_by_name
from m2f_med.inference.bundle_model import load_bundle
from m2f_med.inference.predict import DEFAULT_BUNDLE
from m2f_med.inference.volume import predict_volume
from m2f_med.io import load_volume
from m2f_med.transforms.labels import RemapLabels

# Dice on the held-out scan reported in the bundle's docs/README.md and metadata.json eval_metrics minus a margin
# (organs in view only), with the bundle's defaults (whole-slice plan, largest component per organ).
# Reported: liver 0.856, spleen 0.720, aorta 0.714, inferior_vena_cava 0.448; stomach 0.0 and pancreas 0.0
# are failures of this model and get no floor.
FLOORS = {
    "liver": 0.82,
    "spleen": 0.68,
    "aorta": 0.66,
    "inferior_vena_cava": 0.40,
}


@pytest.fixture(scope="module")
def held_out(data_dir):
    torch.set_num_threads(2)
    ts = data_dir / "totalsegmentator"
    model = load_bundle(DEFAULT_BUNDLE, device="cpu")
    volume = load_volume(ts / "example_ct_dicom")
    mask, _ = predict_volume(volume, model)
    ref = load_volume(ts / "example_seg_dicom.nii.gz", label=True)
    # the reference is stored LAS on the series' grid: match by world position, nearest neighbour
    ref = ResampleToMatch(mode="nearest")(ref, mask)
    names = json.loads((DEFAULT_BUNDLE / "configs" / "datalist.json").read_text())["labels"]
    ref = RemapLabels(mapping_by_name(names, model.labels))(ref)
    return model, volume, mask, ref


def test_mask_is_on_the_source_grid(held_out):
    _, volume, mask, ref = held_out
    assert tuple(mask.shape[1:]) == tuple(volume.shape[1:]) == tuple(ref.shape[1:])
    np.testing.assert_allclose(np.asarray(mask.affine), np.asarray(volume.affine), atol=1e-4)


def test_dice_per_organ_above_floor(held_out):
    model, _, mask, ref = held_out
    k = len(model.labels)
    pred = one_hot(torch.as_tensor(mask).long()[None], k + 1)
    gt = one_hot(torch.as_tensor(ref).long()[None], k + 1)
    dice = DiceMetric(include_background=False, reduction="none")(pred, gt)[0]
    by_name = {model.labels[i + 1]: float(dice[i]) for i in range(k)}
    low = {n: round(by_name[n], 3) for n, floor in FLOORS.items() if not by_name[n] >= floor}
    print("held-out Dice:", {n: round(v, 4) for n, v in by_name.items()})
    assert not low, f"Dice below floor on the held-out scan: {low} (all: {by_name})"


def test_spleen_blob_on_the_table_is_removed_or_flagged(held_out):
    """The shipped network marks a 'spleen' piece on the patient table of the held-out scan (issue 11): the
    bundle's post-processing (largest component) removes it; without it, QC flags it."""
    from m2f_med.inference.qc import body_mask, quality_control
    from m2f_med.inference.statistics import structure_statistics

    model, volume, mask, _ = held_out
    spleen = [c for c, n in model.labels.items() if n == "spleen"][0]
    body = body_mask(np.asarray(volume[0]))
    assert model.postprocessing.get("keep_largest")
    assert not (np.asarray(mask[0]) == spleen)[~body].any()  # removed
    raw, _ = predict_volume(volume, model, postprocess=False)
    assert (np.asarray(raw[0]) == spleen)[~body].sum() > 100  # it was there
    rows = structure_statistics(raw, volume, model.labels, modality="CT")
    rows, _ = quality_control(rows, raw, volume, meta=volume.meta, modality="CT")
    by = {r["name"]: r for r in rows}
    assert by["spleen"]["qc"] != "ok"
    assert any("outside the body" in reason for reason in by["spleen"]["qc_reasons"])
