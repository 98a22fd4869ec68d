"""``m2f-med inspect`` / ``convert``: JSON schema, conversions, exit codes, one-line errors, no patient data."""

from __future__ import annotations

import glob
import json

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from m2f_med.cli import main
from m2f_med.io.image_files import load_image_file
from m2f_med.io.loader import load_volume


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(err: str, path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("m2f-med: error: ") and str(path) in lines[0]
    assert "Traceback" not in err


def test_inspect_json_lists_studies_series_and_geometry(capsys, data_dir):
    folder = data_dir / "tcia/soft_tissue_sarcoma/STS_001"
    code, out, _ = _run(capsys, "inspect", folder, "--json")
    assert code == 0
    rep = json.loads(out)
    assert rep["schema"] == "m2f-med/inspect/1" and rep["type"] == "dicom" and rep["image"] is None
    assert len(rep["studies"]) == 1
    series = rep["studies"][0]["series"]
    assert len(series) == 6 and sorted(s["object"] for s in series).count("RTSTRUCT") == 3
    main_series = [s for s in series if s["main"]]
    assert len(main_series) == 1 and main_series[0]["series_uid"] == rep["main_series"]
    ct = main_series[0]
    assert ct["modality"] == "CT" and ct["instances"] == 59 and ct["excluded"] is None and ct["error"] is None
    vol = ct["volume"]
    ref = load_volume(folder / "CT/dicom/image")
    assert vol["shape"] == [198, 202, 59] and vol["orientation"] == "LPS"
    np.testing.assert_allclose(vol["spacing_mm"], ref.meta["spacing_mm"], atol=1e-5)
    np.testing.assert_allclose(np.array(vol["affine"]), ref.affine.numpy(), atol=1e-5)
    rs = next(s for s in series if s["object"] == "RTSTRUCT" and s["labels"] == {"1": "GTV_Mass_CT"})
    assert rs["volume"] is None and rs["excluded"] == "RTSTRUCT"
    for s in series:
        assert set(s) >= {"series_uid", "series_number", "modality", "description", "object", "instances",
                          "images", "excluded", "main", "labels", "volume", "error"}


def test_inspect_never_prints_patient_name_or_id(capsys, data_dir):
    folder = data_dir / "dcmqi/ct-3slice"
    ds = pydicom.dcmread(sorted(glob.glob(str(folder / "*.dcm")))[0], stop_before_pixels=True)
    for flag in ([], ["--json"]):
        code, out, err = _run(capsys, "inspect", folder, *flag)
        assert code == 0
        assert str(ds.PatientName) not in out + err and str(ds.PatientID) not in out + err


def test_inspect_image_file_text_and_json(capsys, data_dir):
    path = data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd"
    code, out, _ = _run(capsys, "inspect", path)
    assert code == 0 and "shape 512x512x3" in out and "orientation LPS" in out
    code, out, _ = _run(capsys, "inspect", path, "--json")
    rep = json.loads(out)
    assert rep["type"] == "image_file" and rep["image"]["format"] == "nrrd" and rep["studies"] == []
    assert rep["image"]["spacing_mm"] == pytest.approx([0.810547, 0.810547, 1.0])


def test_inspect_errors_exit_2_with_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "inspect", tmp_path / "missing")
    assert code == 2
    _assert_one_line_error(err, tmp_path / "missing")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10)
    code, _, err = _run(capsys, "inspect", junk)
    assert code == 2
    _assert_one_line_error(err, junk)


def test_convert_series_folder_to_nifti(capsys, tmp_path, data_dir):
    folder = data_dir / "tcia/soft_tissue_sarcoma/STS_001"
    out = tmp_path / "ct.nii.gz"
    code, _, err = _run(capsys, "convert", folder, "-o", out)
    assert code == 0 and "m2f-med: series" in err and "chose series" in err
    img = nib.load(str(out))
    ref = load_volume(folder / "CT/dicom/image")
    np.testing.assert_allclose(img.affine, ref.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asanyarray(img.dataobj), ref.numpy()[0])


def test_convert_rtstruct_and_seg_to_label_maps(capsys, tmp_path, data_dir):
    base = data_dir / "tcia/soft_tissue_sarcoma/STS_002/CT"
    out = tmp_path / "gtv.nii.gz"
    code, stdout, _ = _run(capsys, "convert", base / "dicom/mask/RS.dcm", "--reference", base / "dicom/image", "-o", out)
    assert code == 0 and stdout.strip() == "1\tGTV_Mass_CT"
    got = nib.load(str(out))
    truth = load_image_file(base / "nifti/mask/mask.nii.gz", label=True).numpy()[0] > 0
    a = np.asanyarray(got.dataobj) > 0
    assert got.get_data_dtype() == np.uint8
    assert 2 * (a & truth).sum() / (a.sum() + truth.sum()) >= 0.97

    code, stdout, _ = _run(capsys, "convert", data_dir / "dcmqi/seg_dicom/liver.dcm", "-o", tmp_path / "seg.nii.gz")
    assert code == 0 and stdout.strip() == "1\tLiver"
    liver = load_image_file(data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd", label=True)
    assert int(np.asanyarray(nib.load(str(tmp_path / "seg.nii.gz")).dataobj).sum()) == int(liver.numpy().sum())


def test_convert_label_map_to_dicom_seg(capsys, tmp_path, data_dir):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"_note": "ignored", "0": "background", "1": "liver"}))
    out = tmp_path / "liver.dcm"
    code, _, err = _run(
        capsys, "convert", data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd", "--reference", data_dir / "dcmqi/ct-3slice",
        "-o", out, "--labels", labels, "--manual",
    )
    assert code == 0, err
    seg = hd.seg.segread(out)
    desc = seg.get_segment_description(1)
    assert desc.SegmentLabel == "liver" and desc.SegmentAlgorithmType == "MANUAL"
    assert "not for clinical use" in seg.SeriesDescription


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{rs}", "-o", "{tmp}/x.nii.gz"], "needs --reference"),
        (["{nrrd}", "-o", "{tmp}/x.dcm"], "needs --reference"),
        (["{nrrd}", "-o", "{tmp}/x.txt"], "output must end in"),
        (["{junk}", "-o", "{tmp}/x.nii.gz"], "junk.nii.gz"),
        (["{tmp}/missing", "-o", "{tmp}/x.nii.gz"], "no such file"),
        (["{labels_bad}", "--reference", "{ct3}", "-o", "{tmp}/x.dcm"], "mask is empty"),
    ],
)
def test_convert_errors_are_one_line_and_exit_2(capsys, tmp_path, data_dir, args, needle):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"definitely not gzip")
    empty = tmp_path / "empty.nii.gz"
    ct3 = load_volume(data_dir / "dcmqi/ct-3slice")
    nib.save(nib.Nifti1Image(np.zeros((512, 512, 3), np.uint8), ct3.affine.numpy()), str(empty))
    subs = {
        "rs": data_dir / "tcia/soft_tissue_sarcoma/STS_001/CT/dicom/mask/RS.dcm",
        "nrrd": data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd",
        "junk": junk, "tmp": tmp_path, "labels_bad": empty, "ct3": data_dir / "dcmqi/ct-3slice",
    }
    code, _, err = _run(capsys, "convert", *[a.format(**subs) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("m2f-med: error: ") and needle in lines[0], err
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))


def test_convert_never_overwrites_its_inputs(capsys, tmp_path, data_dir):
    """-o naming the input file, a slice of the --reference series, or a hard link to one: refused, untouched."""
    import shutil

    series = tmp_path / "ct"
    shutil.copytree(data_dir / "dcmqi/ct-3slice", series)
    nrrd = tmp_path / "liver.nrrd"
    shutil.copy(data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd", nrrd)
    nii = tmp_path / "ct.nii.gz"
    shutil.copy(data_dir / "totalsegmentator/example_ct_sm.nii.gz", nii)
    before = {p: p.read_bytes() for p in [*series.iterdir(), nrrd, nii]}
    (tmp_path / "slice.dcm").hardlink_to(series / "02.dcm")
    cases = [
        ([nrrd, "--reference", series, "-o", series / "01.dcm"], series / "01.dcm"),  # a slice of the reference
        ([nrrd, "--reference", series, "-o", tmp_path / "slice.dcm"], "slice.dcm"),  # a hard link to one
        ([nii, "-o", tmp_path / "x" / ".." / "ct.nii.gz"], "ct.nii.gz"),  # the input file itself
    ]
    for argv, needle in cases:
        code, _, err = _run(capsys, "convert", *argv)
        assert code == 2, err
        _assert_one_line_error(err, needle)
        assert "one of the input files" in err
    assert {p: p.read_bytes() for p in before} == before


def test_convert_output_that_is_a_folder_or_under_a_file_is_one_line(capsys, tmp_path, data_dir):
    src = data_dir / "totalsegmentator/example_ct_sm.nii.gz"
    (tmp_path / "dir.nii.gz").mkdir()
    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path / "dir.nii.gz", "Is a directory"), (tmp_path / "file" / "x.nii.gz", "file")):
        code, _, err = _run(capsys, "convert", src, "-o", out)
        assert code == 2
        _assert_one_line_error(err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.nii.gz", "file"]
    assert list((tmp_path / "dir.nii.gz").iterdir()) == []
