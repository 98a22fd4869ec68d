"""The lesion bundle: patient-level split, deployable configs, and the shipped model on one real STS patient
(predict's instance outputs, one-segment-per-lesion DICOM-SEG round trip, no-lesion outcome)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from m2f_med.bundle import fold_datalist
from m2f_med.io.errors import VolumeError

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "m2f_ct_lesions"
CONFIGS = BUNDLE / "configs"


def test_split_is_patient_level_and_complete(data_dir):
    datalist = json.loads((CONFIGS / "datalist.json").read_text())
    patients = [c["patient"] for c in datalist["training"]]
    assert len(patients) == len(set(patients)) == 19
    splits = json.loads((CONFIGS / "folds.json").read_text())["splits"]
    tests = [p for s in splits for p in s["test"]]
    assert sorted(tests) == sorted(patients)  # every patient in exactly one test fold
    for s in splits:
        roles = {r: fold_datalist(CONFIGS / "datalist.json", CONFIGS / "folds.json", s["fold"], r, data_dir)
                 for r in ("training", "validation", "test")}
        ids = {r: {c["patient"] for c in v} for r, v in roles.items()}
        assert not (ids["training"] & ids["test"]) and not (ids["validation"] & ids["test"])
        assert not (ids["training"] & ids["validation"])
        assert len(ids["training"]) + len(ids["validation"]) + len(ids["test"]) == 19
    final = fold_datalist(CONFIGS / "datalist.json", CONFIGS / "folds.json", None, "training", data_dir)
    assert len(final) == 19
    assert fold_datalist(CONFIGS / "datalist.json", CONFIGS / "folds.json", None, "test", data_dir) == []


def test_fold_datalist_rejects_a_patient_in_two_test_folds(tmp_path, data_dir):
    splits = json.loads((CONFIGS / "folds.json").read_text())
    splits["splits"][1]["test"].append(splits["splits"][0]["test"][0])
    bad = tmp_path / "folds.json"
    bad.write_text(json.dumps(splits))
    with pytest.raises(VolumeError, match="two test folds"):
        fold_datalist(CONFIGS / "datalist.json", bad, 0, "test", data_dir)


def test_configs_agree_and_parse_without_the_data_folder(tmp_path, monkeypatch):
    infer = yaml.safe_load((CONFIGS / "inference.yaml").read_text())
    evaluate = yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())
    train = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    assert infer["instance_inference"] == evaluate["instance_inference"]
    for key in ("labels", "thing_classes", "num_context_slices", "pixdim", "intensity", "roi_size"):
        assert infer[key] == train[key], key
    monkeypatch.setenv("M2F_MED_DATA", str(tmp_path / "missing"))
    from m2f_med.inference.bundle_model import load_bundle

    model = load_bundle(BUNDLE)  # parses every key it reads, without the data folder
    assert model.thing_classes == (1,) and model.instance_settings.min_voxels == infer["instance_inference"]["min_voxels"]
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    assert parser.get_parsed_content("data") == []


def test_shipped_model_finds_the_tumour_of_a_real_sts_patient(data_dir, tmp_path):
    """STS_001 (DICOM + RTSTRUCT). It is one of the 19 training patients of the shipped weights, so this
    guards the pipeline (instances, table, SEG) and the weights, not quality on unseen data (see README)."""
    import nibabel as nib
    import pydicom

    from m2f_med.inference.predict import predict
    from m2f_med.io import read_dicom_seg

    series = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001" / "CT" / "dicom" / "image"
    report = predict([series], tmp_path, bundle=BUNDLE, formats="nifti,dicom-seg", statistics=True,
                     preview=True, quiet=True)
    (rec,) = report["series"]
    assert rec["status"] == "done", rec
    out = tmp_path / rec["key"]
    doc = json.loads((out / "instances.json").read_text())
    assert doc["format"] == "m2f-med-instances/1" and doc["thing_classes"] == [1] and doc["instances"]
    ids = nib.load(out / "instances.nii.gz")
    inst = np.asarray(ids.dataobj)
    sem = np.asarray(nib.load(out / "mask.nii.gz").dataobj)
    assert set(np.unique(inst)) - {0} == {r["id"] for r in doc["instances"]}
    assert np.array_equal(inst > 0, sem == 1)  # semantic mask and instances agree
    ref = np.asarray(nib.load(data_dir / "tcia/soft_tissue_sarcoma/STS_001/CT/nifti/mask/mask.nii.gz").dataobj) > 0
    dice = 2 * np.sum((sem == 1) & ref) / (np.sum(sem == 1) + np.sum(ref))
    assert dice >= 0.65  # measured 0.691 with the shipped weights (0.2.0)
    top = doc["instances"][0]
    hit = inst == top["id"]
    assert np.sum(hit & ref) / np.sum(hit) > 0.4  # the best lesion lies on the tumour
    assert 0 <= top["score"] <= 1 and top["volume_ml"] > 1 and -100 < top["mean_intensity"] < 150
    # lesion QC: a crop like the training data (197 mm): no scan-level warning; the tumour is not failed
    assert doc["qc_settings"]["max_field_of_view_mm"] == 200 and doc["qc_scan"]["reasons"] == []
    assert all(r["qc"] in ("ok", "check", "fail") for r in doc["instances"]) and top["qc"] != "fail"
    assert not any(w.startswith("lesion QC") for w in rec["warnings"])
    # DICOM-SEG: one segment per lesion, own tracking ids, frames on the source instances
    seg = pydicom.dcmread(out / "instances.seg.dcm")
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == [f"lesion {r['id']}" for r in doc["instances"]]
    uids = [s.TrackingUID for s in seg.SegmentSequence]
    assert len(set(uids)) == len(uids) and all(s.TrackingID for s in seg.SegmentSequence)
    source_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in seg.PerFrameFunctionalGroupsSequence}
    assert refs and refs <= source_uids
    back, _ = read_dicom_seg(out / "instances.seg.dcm", reference=None)
    assert int((np.asarray(back[0]) > 0).sum()) == int((inst > 0).sum())
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(out / "instances.seg.dcm")], capture_output=True, text=True)
        assert "Error" not in res.stderr, res.stderr[-2000:]


def test_no_lesion_is_a_normal_outcome(tmp_path):
    """An air-only CT: empty table with a note, all-zero instance map, no crash."""
    import nibabel as nib

    from m2f_med.inference.predict import predict

    air = np.full((64, 64, 12), -1000, np.int16)
    path = tmp_path / "air.nii.gz"
    nib.save(nib.Nifti1Image(air, np.diag([0.98, 0.98, 3.27, 1.0])), path)
    report = predict([path], tmp_path / "out", bundle=BUNDLE, formats="nifti", preview=True, quiet=True)
    (rec,) = report["series"]
    assert rec["status"] == "done"
    doc = json.loads((tmp_path / "out" / rec["key"] / "instances.json").read_text())
    assert doc["instances"] == [] and doc["note"] == "no lesion found"
    assert "no lesion found" in rec["warnings"]
    assert not np.asarray(nib.load(tmp_path / "out" / rec["key"] / "instances.nii.gz").dataobj).any()


def test_whole_ct_is_flagged_as_unlike_the_training_crops(data_dir, tmp_path):
    """The TotalSegmentator example series: 512 x 512 slices (500 mm across), far larger than the sarcoma
    crops the lesion model was trained on. Whatever it finds there is flagged, and the series says why."""
    from m2f_med.inference.predict import predict

    series = data_dir / "totalsegmentator" / "example_ct_dicom"
    report = predict([series], tmp_path, bundle=BUNDLE, formats="nifti", preview=True, quiet=True)
    (rec,) = report["series"]
    assert rec["status"] == "done", rec
    qc_warnings = [w for w in rec["warnings"] if w.startswith("lesion QC")]
    assert len(qc_warnings) == 1 and "500 x 500 mm" in qc_warnings[0] and "not validated" in qc_warnings[0]
    doc = json.loads((tmp_path / rec["key"] / "instances.json").read_text())
    assert doc["qc_scan"]["field_of_view_mm"][0] == pytest.approx(500, abs=2)
    assert all(r["qc"] in ("check", "fail") for r in doc["instances"])
    assert all(any("larger than the training images" in s for s in r["qc_reasons"]) for r in doc["instances"])


def _script(name):
    import importlib.util
    import sys

    sys.path.insert(0, str(BUNDLE / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, BUNDLE / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BUNDLE / "scripts"))


def test_cross_validation_run_names_carry_seed_and_context():
    cv = _script("cross_validate")
    assert cv.parse_run("unet_f3_k3_s43") == ("unet", 3, {"num_context_slices": 3, "seed": 43})
    cmd = cv.command("m2f_f0_s43")
    assert cmd[cmd.index("--fold") + 1] == "0" and cmd[cmd.index("--seed") + 1] == "43"
    assert "--seed" not in cv.command("final") and "--fold" not in cv.command("final")
    assert cv.run_names("k3") == [f"{m}_f{f}_k3" for f in range(5) for m in ("m2f", "unet")]
    for bad in ("m2f_x0", "m2f_f0_z3", "cnn_f0"):
        with pytest.raises(SystemExit, match="run name"):
            cv.parse_run(bad)


def test_lesion_score_threshold_is_chosen_on_validation_only():
    rules = _script("evaluate_rules")
    ref = np.zeros((20, 20, 4), np.int32)
    ref[2:8, 2:8, :] = 1
    hit = ref.copy()  # the tumour, found with a high score ...
    spurious = hit.copy()
    spurious[12:16, 12:16, :] = 2  # ... and a false positive with a low score
    preds = [(spurious, {1: 0.9, 2: 0.4}, ref), (hit, {1: 0.8}, ref)]
    t, results = rules.choose(preds)
    assert results[0.0]["fp"] == 1 and results[0.0]["tp"] == 2
    assert t == 0.5  # the lowest threshold that removes the false positive and keeps both tumours
    assert results[t]["f1"] == 1.0 and results[0.9]["fn"] == 1
    # nothing to gain: no filtering
    t, _ = rules.choose([(hit, {1: 0.8}, ref)])
    assert t == 0.0
