"""``inspect`` says what is what: the folder of each series, a main series that cannot load, DERIVED-only
series, and which spacing is the voxel step and which the distance between tilted slice planes."""

from __future__ import annotations

import json

from m2f_med.cli import main


def _inspect(capsys, *args):
    code = main(["inspect", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_truncated_derived_file_is_not_reported_as_a_fine_main_series(capsys, data_dir):
    path = data_dir / "dicom_edge_cases/pydicom_testfiles/MR_truncated.dcm"
    code, out, err = _inspect(capsys, path)
    assert code == 1
    assert "among 0" not in out and "not selectable: DERIVED" not in out
    assert "DERIVED: picked only when no ORIGINAL series is there" in out
    assert out.strip().splitlines()[-1].endswith("but it cannot be loaded")
    assert "Traceback" not in err
    code, out, _ = _inspect(capsys, path, "--json")
    report = json.loads(out)
    s = report["studies"][0]["series"][0]
    assert code == 1 and report["loadable"] is False and s["derived"] and s["excluded"] is None and s["main"]


def test_each_series_shows_its_folder(capsys, data_dir):
    code, out, _ = _inspect(capsys, data_dir / "dicom_edge_cases/dicom2nifti_tests/failing", "--json")
    folders = sorted(s["folder"] for st in json.loads(out)["studies"] for s in st["series"])
    assert folders == ["gantrytilting/001", "notavolume/001", "slicecount/001", "sliceincrement/001",
                       "sliceincrement/002", "sliceorientation/001"]
    assert code == 1  # notavolume and sliceorientation cannot be loaded


def test_gantry_tilt_says_which_spacing_is_which(capsys, data_dir):
    code, out, _ = _inspect(capsys, data_dir / "dicom_edge_cases/dcm_qa_ct_GE_gantry_tilt")
    assert code == 0
    line = next(x for x in out.splitlines() if "spacing" in x and "shape" in x)
    assert "4.221 mm (voxel steps; the slice planes are 4.002 mm apart" in line
    code, out, _ = _inspect(capsys, data_dir / "dicom_edge_cases/dcm_qa_ct_GE_gantry_tilt", "--json")
    vol = json.loads(out)["studies"][0]["series"][0]["volume"]
    assert abs(vol["spacing_mm"][2] - 4.221) < 1e-3 and abs(vol["plane_spacing_mm"] - 4.002) < 1e-3


def test_dicomdir_series_with_a_202_mm_gap_is_split_and_says_so(capsys, data_dir):
    """pydicom's CT2: one slice 202.5 mm from the other three (162x their 1.25 mm spacing). Over the gap
    limit (10x) the series is split: the three are loaded, the lone slice is named, nothing is invented."""
    folder = data_dir / "dicom_edge_cases/pydicom_testfiles/dicomdirtests/77654033/CT2"
    code, out, err = _inspect(capsys, folder)
    assert code == 0 and "Traceback" not in err and "cannot load" not in out
    assert ("a gap of 202.5 mm (162x the usual 1.25 mm spacing, limit 10x) splits the series: kept the largest "
            "part (3 slices), left out 1: 17106") in out
    code, out, _ = _inspect(capsys, folder, "--json")
    vol = json.loads(out)["studies"][0]["series"][0]["volume"]
    assert vol["shape"][-1] == 3 and not any("invented" in p or "interpolated" in p for p in vol["problems"])
