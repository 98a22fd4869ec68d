"""``convert`` keeps structure names across NIfTI: RTSTRUCT/SEG -> NIfTI writes ``OUT.labels.json``, and
NIfTI -> DICOM-SEG reads it back, so a round trip names segments as the RTSTRUCT did (not "label 1")."""

from __future__ import annotations

import json

import highdicom as hd

from m2f_med.cli import main


def test_rtstruct_names_survive_nifti_and_come_back_in_the_seg(tmp_path, data_dir, capsys):
    base = data_dir / "tcia/soft_tissue_sarcoma/STS_002/CT/dicom"
    mask = tmp_path / "gtv.nii.gz"
    assert main(["convert", str(base / "mask/RS.dcm"), "--reference", str(base / "image"), "-o", str(mask)]) == 0
    sidecar = tmp_path / "gtv.labels.json"
    assert json.loads(sidecar.read_text()) == {"1": "GTV_Mass_CT"}
    seg_path = tmp_path / "gtv.dcm"
    assert main(["convert", str(mask), "--reference", str(base / "image"), "-o", str(seg_path)]) == 0
    assert hd.seg.segread(seg_path).get_segment_description(1).SegmentLabel == "GTV_Mass_CT"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # the source CT's StudyID is 18 characters (SH allows 16): pydicom's warning, once per slice read for the
    # SEG, is not repeated on the console (m2f_med.io.dicom_vr / dicom_warnings)
    assert err.count("exceeds the maximum length") <= 1, err


def test_seg_to_nifti_writes_the_segment_names(tmp_path, data_dir):
    out = tmp_path / "parts.nii"
    assert main(["convert", str(data_dir / "dcmqi/seg_dicom/liver.dcm"), "-o", str(out)]) == 0
    assert json.loads((tmp_path / "parts.labels.json").read_text()) == {"1": "Liver"}
