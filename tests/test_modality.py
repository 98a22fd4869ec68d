"""Modality checks: a CT model refuses MR NIfTI files (no modality stated) unless --modality CT is given."""

from __future__ import annotations

import json

import pytest

from m2f_med.inference.modality import check_modality, ct_intensity_problem
from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import load_image_file

CT_FILES = [
    "totalsegmentator/example_ct.nii.gz",
    "ivadomed_msd_spleen_and_spinalcord/ct_scan/sub-spleen2/ct/sub-spleen2_ct.nii.gz",  # 13 cm crop
    "totalsegmentator/aorta_crop_1.5mm/ct_cropped.nii.gz",
    "ibsi_sts_ct/STS_008/CT_image.nii.gz",  # thigh, 5 cm around the tumour
    "pyradiomics/lung1_image.nrrd",
]
MR_FILES = [
    "totalsegmentator/example_mr_sm.nii.gz",  # abdominal MR
    "pyradiomics/brain1_image.nrrd",
    "pyradiomics/breast1_image.nrrd",
    "deepmedic_brats2015/brats_2013_pat0006_1/Flair_subtrMeanDivStd.nii.gz",  # z-scores
]


@pytest.mark.parametrize("name", CT_FILES)
def test_real_ct_files_look_like_hu(data_dir, name):
    vol = load_image_file(data_dir / name)
    assert ct_intensity_problem(vol) is None
    assert check_modality(vol, "CT", source=name) == "CT"


@pytest.mark.parametrize("name", MR_FILES)
def test_real_mr_files_are_refused_by_a_ct_model(data_dir, name):
    vol = load_image_file(data_dir / name)
    assert not vol.meta.get("modality")
    with pytest.raises(VolumeError, match="does not look like CT.*--modality CT"):
        check_modality(vol, "CT", source=name)
    assert check_modality(vol, "CT", declared="CT") == "CT"  # the user's word wins
    with pytest.raises(VolumeError, match="--modality MR, but the model expects CT"):
        check_modality(vol, "CT", declared="MR")
    assert check_modality(vol, None) == ""  # a model without a modality takes anything


def test_a_stated_modality_must_match(data_dir):
    vol = load_image_file(data_dir / "totalsegmentator/example_ct.nii.gz")
    vol.meta["modality"] = "MR"
    with pytest.raises(VolumeError, match="modality MR, but the model expects CT"):
        check_modality(vol, "CT", declared="CT")


def test_predict_refuses_mr_nifti_without_modality(data_dir, tmp_path):
    from m2f_med.inference.predict import predict

    report = predict([data_dir / "totalsegmentator/example_mr_sm.nii.gz"], tmp_path, quiet=True)
    (record,) = report["series"]
    assert record["status"] == "failed" and "does not look like CT" in record["message"]
    assert "--modality CT" in json.loads((tmp_path / "run_report.json").read_text())["series"][0]["message"]
