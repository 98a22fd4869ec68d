"""Quality control: per-structure verdicts with reasons, on hand-made volumes and on real scans."""

from __future__ import annotations

import csv
import json

import numpy as np
import torch

from m2f_med.inference.qc import REFERENCES, quality_control, region_covered
from m2f_med.inference.statistics import structure_statistics, write_statistics
from m2f_med.io.volume import make_volume

LABELS = {1: "liver", 2: "spleen", 3: "kidney_left"}


def _scan():
    """A 2 mm 'patient' (40 HU soft tissue in air) on a separate 'table', with a liver, a bony spleen and a
    kidney in two large pieces plus a piece on the table."""
    img = np.full((100, 100, 40), -1000.0, np.float32)
    img[10:90, 10:80, :] = 40.0  # body
    img[10:90, 85:90, :] = 200.0  # table, not touching the body
    lab = np.zeros(img.shape, np.uint8)
    lab[15:60, 15:60, 5:35] = 1  # 45*45*30*8 mm3 = 486 mL: below the liver range
    img[15:60, 15:60, 5:35] = 60.0
    lab[65:80, 20:35, 10:20] = 2
    img[65:80, 20:35, 10:20] = 900.0  # "spleen" in bone
    lab[62:75, 50:60, 3:13] = 3
    lab[62:75, 50:60, 25:35] = 3  # second large part
    lab[40:45, 86:89, 10:14] = 3  # on the table
    img[62:75, 50:60, :] = 35.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    return make_volume(torch.from_numpy(img)[None], aff, modality="CT"), make_volume(torch.from_numpy(lab)[None], aff)


def test_verdicts_and_reasons_on_a_hand_made_scan(tmp_path):
    image, label = _scan()
    rows = structure_statistics(label, image, LABELS, modality="CT", confidence={1: 0.9, 2: 0.3, 3: 0.8})
    rows, scan = quality_control(rows, label, image, modality="CT", meta={"BodyPartExamined": "ABDOMEN"})
    by = {r["name"]: r for r in rows}
    assert scan["region_covered"] is True and scan["region"] == "abdomen"
    assert by["liver"]["qc"] == "check" and "below the plausible adult range" in by["liver"]["qc_reasons"][0]
    spleen = " | ".join(by["spleen"]["qc_reasons"])
    assert by["spleen"]["qc"] == "fail" and "900 HU outside the spleen range" in spleen and "low confidence" in spleen
    kidney = " | ".join(by["kidney_left"]["qc_reasons"])
    assert by["kidney_left"]["qc"] == "check"
    assert "2 large disconnected parts" in kidney and "outside the body" in kidney
    # the reasons reach statistics.json and .csv
    write_statistics(rows, tmp_path / "s.json", tmp_path / "s.csv")
    assert json.loads((tmp_path / "s.json").read_text())["structures"][1]["qc"] == "fail"
    table = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert table[1]["qc"] == "fail" and "outside the spleen range" in table[1]["qc_reasons"]


def test_region_from_body_part_examined_and_absent_structures():
    image, label = _scan()
    rows = structure_statistics(label, image, {**LABELS, 4: "pancreas"}, modality="CT")
    rows, scan = quality_control(rows, label, image, modality="CT", meta={"BodyPartExamined": "HEAD"})
    assert scan["region_covered"] is False
    assert all(r["qc"] == "fail" and "not covered" in r["qc_reasons"][0] for r in rows if r["voxels"])
    assert rows[-1]["qc"] == "absent"
    assert region_covered({}, "abdomen") == (None, None)
    assert region_covered({"BodyPartExamined": "PARTIALBODY"}, "abdomen") == (None, None)
    assert set(REFERENCES) >= {"liver", "spleen", "aorta", "inferior_vena_cava"}


def test_thigh_ct_is_flagged_region_not_covered(data_dir, tmp_path):
    """The shipped abdominal model on the thigh sarcoma CT (BodyPartExamined EXTREMITY): every structure fails,
    in statistics.json/.csv, run_report.json and the preview."""
    from m2f_med.inference.predict import predict

    torch.set_num_threads(2)
    report = predict([data_dir / "tcia/soft_tissue_sarcoma/STS_001/CT/dicom"], tmp_path, statistics=True,
                     preview=True, quiet=True)
    (series,) = [s for s in report["series"] if s["status"] != "skipped"]  # the RTSTRUCT is skipped
    assert series["status"] == "done" and series["qc_scan"]["region_covered"] is False
    assert series["qc"] and all(v["verdict"] == "fail" and "region not covered" in v["reasons"][0]
                                for v in series["qc"].values())
    rows = json.loads((tmp_path / series["key"] / "statistics.json").read_text())["structures"]
    assert all(r["qc"] in ("fail", "absent") for r in rows)
    # the spleen the model puts near the femur is also implausible on its own (HU, volume or confidence)
    spleen = next(r for r in rows if r["name"] == "spleen")
    assert spleen["qc"] == "absent" or any(w in " ".join(spleen["qc_reasons"][1:]) for w in ("HU", "mL", "confidence"))
    assert (tmp_path / series["key"] / "preview.png").stat().st_size > 0
    saved = json.loads((tmp_path / "run_report.json").read_text())["series"]
    assert next(s for s in saved if s["key"] == series["key"])["qc"] == series["qc"]
