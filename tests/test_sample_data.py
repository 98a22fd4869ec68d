"""m2f_med.sample_data: local samples with checksums, and the pooch download path with a fake downloader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m2f_med.io.errors import VolumeError
from m2f_med.sample_data import SAMPLES, SOURCE_URL, sample_ct_path


def test_local_samples_resolve_and_match_their_checksums(data_dir):
    ct = sample_ct_path("ct")
    assert ct == data_dir / "totalsegmentator" / "example_ct.nii.gz"
    series = sample_ct_path("ct_dicom")
    assert series.is_dir()
    # the registry lists exactly the files of the series folder
    assert sorted(p.name for p in series.iterdir()) == sorted(SAMPLES["ct_dicom"].sha256)


def test_local_file_with_wrong_content_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "totalsegmentator" / "example_ct.nii.gz"
    fake.parent.mkdir()
    fake.write_bytes(b"not a CT")
    monkeypatch.setenv("M2F_MED_DATA", str(tmp_path))
    with pytest.raises(VolumeError, match="sha256") as err:
        sample_ct_path("ct")
    assert "example_ct.nii.gz" in str(err.value)


def _fake_downloader(content: bytes, calls: list):
    def download(url, output_file, pooch_instance, check_only=False):
        calls.append(url)
        if hasattr(output_file, "write"):
            output_file.write(content)
        else:
            Path(output_file).write_bytes(content)
    return download


def test_download_is_checked_and_cached(data_dir, tmp_path, monkeypatch):
    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("M2F_MED_DATA", str(empty))
    calls: list = []
    real = (data_dir / "totalsegmentator" / "example_ct.nii.gz").read_bytes()
    path = sample_ct_path("ct", cache_dir=tmp_path / "cache", downloader=_fake_downloader(real, calls))
    assert path == tmp_path / "cache" / "totalsegmentator" / "example_ct.nii.gz"
    assert path.read_bytes() == real
    assert calls == [SOURCE_URL + "totalsegmentator/example_ct.nii.gz"]
    # a second call uses the cached, verified file
    sample_ct_path("ct", cache_dir=tmp_path / "cache", downloader=_fake_downloader(real, calls))
    assert len(calls) == 1


def test_download_with_wrong_content_fails_its_checksum(tmp_path, monkeypatch):
    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("M2F_MED_DATA", str(empty))
    with pytest.raises(VolumeError, match="checksum"):
        sample_ct_path("ct", cache_dir=tmp_path / "cache", downloader=_fake_downloader(b"tampered", []))
    assert not (tmp_path / "cache" / "totalsegmentator" / "example_ct.nii.gz").exists()


def test_no_download_and_no_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_MED_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="M2F_MED_DATA"):
        sample_ct_path("ct_dicom", download=False)
    with pytest.raises(KeyError):
        sample_ct_path("mr")


def test_cli_predict_without_inputs_is_a_usage_error(tmp_path, capsys):
    from m2f_med.cli import main

    assert main(["predict", "-o", str(tmp_path / "out")]) == 2
    assert "--sample" in capsys.readouterr().err


def test_partial_local_series_is_refused(data_dir, tmp_path, monkeypatch):
    src = data_dir / "totalsegmentator" / "example_ct_dicom"
    dst = tmp_path / "totalsegmentator" / "example_ct_dicom"
    dst.mkdir(parents=True)
    for name in sorted(SAMPLES["ct_dicom"].sha256)[:5]:
        shutil.copy(src / name, dst / name)
    monkeypatch.setenv("M2F_MED_DATA", str(tmp_path))
    with pytest.raises(VolumeError, match="missing"):
        sample_ct_path("ct_dicom")
