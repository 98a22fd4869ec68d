"""pydicom's warnings about non-conforming values are counted per series (count, tag, file) into one line
of the problems / report, instead of one console line (plus a repeated UserWarning) per element.
(Values longer than their VR allows have their own line, ``m2f_med.io.dicom_vr``; this is every other
pydicom warning, here an invalid UID.)"""

from __future__ import annotations

import logging
import warnings

import pytest
from dicom_factory import write_series
from pydicom import config

from m2f_med.cli import main
from m2f_med.io.dicom_series import load_dicom_series
from m2f_med.io.dicom_warnings import collect_pydicom_warnings


@pytest.fixture()
def bad_uid(tmp_path, monkeypatch):
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.IGNORE)
    # a UID with letters: pydicom warns "Invalid value for VR UI" each time such an element is read
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0], study_uid="1.2.826.0.1.abc")
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.WARN)
    return tmp_path / "ct"


def test_series_problems_hold_one_counted_line(bad_uid, caplog):
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING, logger="pydicom"):
        warnings.simplefilter("always")
        vol = load_dicom_series(bad_uid)
    assert not [w for w in seen if "Invalid value for VR UI" in str(w.message)]  # no repeated UserWarning
    assert not [r for r in caplog.records if r.name == "pydicom"]  # nothing on the console
    lines = [p for p in vol.meta["problems"] if p.startswith("pydicom warned")]
    assert len(lines) == 1, vol.meta["problems"]
    assert "tag StudyInstanceUID" in lines[0] and "3 files" in lines[0]
    assert "Invalid value for VR UI: '1.2.826.0.1.abc'" in lines[0]
    # outside a collector pydicom speaks as before (nothing is hidden for good)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        import pydicom

        str(pydicom.dcmread(next(bad_uid.iterdir())).StudyInstanceUID)
    assert [w for w in seen if "Invalid value for VR UI" in str(w.message)]


def test_convert_prints_it_once(bad_uid, tmp_path, capfd):
    assert main(["convert", str(bad_uid), "-o", str(tmp_path / "ct.nii.gz")]) == 0
    err = capfd.readouterr().err
    assert err.count("Invalid value for VR UI") == 1 and "pydicom warned" in err, err


def test_nested_collectors_count_separately(bad_uid):
    with collect_pydicom_warnings() as outer:
        vol = load_dicom_series(bad_uid)
    assert len(outer) == 0 and any(p.startswith("pydicom warned") for p in vol.meta["problems"])
