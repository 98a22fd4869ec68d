"""pydicom's warnings about non-conforming values are counted per series (count, tag, file) into one line
of the problems / report, instead of one console line (plus a repeated UserWarning) per element."""

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
def long_body_part(tmp_path, monkeypatch):
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.IGNORE)
    # LO allows 64 characters: pydicom warns each time such an element is read
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0], SeriesDescription="a long description " * 4)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.WARN)
    return tmp_path / "ct"


def test_series_problems_hold_one_counted_line(long_body_part, caplog):
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING, logger="pydicom"):
        warnings.simplefilter("always")
        vol = load_dicom_series(long_body_part)
    assert not [w for w in seen if "maximum length" in str(w.message)]  # no repeated UserWarning
    assert not [r for r in caplog.records if r.name == "pydicom"]  # nothing on the console
    lines = [p for p in vol.meta["problems"] if p.startswith("pydicom warned")]
    assert len(lines) == 1, vol.meta["problems"]
    assert "tag SeriesDescription" in lines[0] and "first im000.dcm" in lines[0]
    assert "exceeds the maximum length of 64 allowed for VR LO" in lines[0]
    # outside a collector pydicom speaks as before (nothing is hidden for good)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        import pydicom

        str(pydicom.dcmread(next(long_body_part.iterdir())).SeriesDescription)
    assert [w for w in seen if "maximum length" in str(w.message)]


def test_convert_prints_it_once(long_body_part, tmp_path, capfd):
    assert main(["convert", str(long_body_part), "-o", str(tmp_path / "ct.nii.gz")]) == 0
    err = capfd.readouterr().err
    assert err.count("exceeds the maximum length") == 1 and "pydicom warned" in err, err


def test_nested_collectors_count_separately(long_body_part):
    with collect_pydicom_warnings() as outer:
        vol = load_dicom_series(long_body_part)
    assert len(outer) == 0 and any(p.startswith("pydicom warned") for p in vol.meta["problems"])
