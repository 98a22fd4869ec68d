"""Messages name what a user types: CLI flags (``--series``, ``--volume-index``), not Python arguments."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from dicom_factory import write_series
from pydicom.uid import generate_uid
from test_predict_bundle import make_test_bundle, stub_module_dir

from m2f_med.cli import main


def test_two_equal_series_error_names_the_series_flag(tmp_path, capsys):
    write_series(tmp_path / "a", [0.0, 2.0, 4.0])
    write_series(tmp_path / "b", [0.0, 2.0, 4.0], series_uid=generate_uid())
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "--series UID" in err and "pass series_uid" not in err
    assert "Traceback" not in err


def _ct_4d(path, n=2):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 400, size=(8, 8, 4, n)).astype(np.int16)
    nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])).to_filename(str(path))
    return data


def test_4d_file_error_names_the_volume_index_flag(tmp_path, capsys):
    path = tmp_path / "four.nii.gz"
    _ct_4d(path)
    assert main(["convert", str(path), "-o", str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "--volume-index" in err and "pick one with volume_index" not in err
    assert main(["convert", str(path), "--volume-index", "1", "-o", str(tmp_path / "o.nii.gz")]) == 0


def test_predict_has_volume_index(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(stub_module_dir(tmp_path)))
    bundle = make_test_bundle(tmp_path / "bundle", k=1)
    path = tmp_path / "four.nii.gz"
    data = _ct_4d(path)
    out = tmp_path / "out"
    base = ["predict", str(path), "-o", str(out), "--bundle", str(bundle), "--modality", "CT", "-q"]
    assert main(base) == 1
    report = json.loads((out / "run_report.json").read_text())
    assert "--volume-index" in report["series"][0]["message"]
    assert main([*base, "--volume-index", "1"]) == 0
    report = json.loads((out / "run_report.json").read_text())
    assert report["series"][0]["status"] == "done"
    mask = nib.load(str(out / report["series"][0]["key"] / "mask.nii.gz"))
    assert mask.shape == data.shape[:3]
    assert "Traceback" not in capsys.readouterr().err
