"""load_volume dispatch: image files, a DICOM file's series, a folder's main series, refusals."""

from __future__ import annotations

import glob

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from m2f_med.io.errors import VolumeError
from m2f_med.io.loader import dicom_object_kind, load_volume
from m2f_med.io.series_selection import AmbiguousSeriesError


def test_image_file_goes_to_the_image_reader(tmp_path):
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 2, 2, 1])), str(path))
    vol = load_volume(path, modality="MR")
    assert tuple(vol.shape) == (1, 2, 3, 4) and vol.meta["modality"] == "MR" and vol.meta["source_format"] == "nifti"
    lab = load_volume(path, label=True)
    assert not lab.dtype.is_floating_point


def test_dicom_file_loads_its_whole_series(data_dir):
    folder = data_dir / "dcmqi/ct-3slice"
    one = load_volume(folder / "02.dcm")
    whole = load_volume(folder)
    assert tuple(one.shape) == tuple(whole.shape) == (1, 512, 512, 3)
    np.testing.assert_array_equal(one.numpy(), whole.numpy())
    assert one.meta["SOPInstanceUIDs"] == whole.meta["SOPInstanceUIDs"]
    with pytest.raises(VolumeError, match="belongs to series"):
        load_volume(folder / "02.dcm", series_uid="1.2.3")


def test_folder_with_several_series_picks_by_the_rules_and_says_so(data_dir):
    folder = data_dir / "tcia/soft_tissue_sarcoma/STS_001"
    vol = load_volume(folder)
    assert vol.meta["modality"] == "CT"
    assert any("chose series" in p and "of 3 image series" in p for p in vol.meta["problems"])
    pet = load_volume(folder, modality="PT")
    assert pet.meta["modality"] == "PT" and tuple(pet.shape[1:3]) != tuple(vol.shape[1:3])
    mr_uid = pydicom.dcmread(sorted(glob.glob(str(folder / "MR_T1/dicom/image/*.dcm")))[0]).SeriesInstanceUID
    mr = load_volume(folder, series_uid=mr_uid)
    assert mr.meta["SeriesInstanceUID"] == mr_uid and mr.meta["modality"] == "MR"


def test_two_equal_series_are_refused_with_a_listing(tmp_path, data_dir):
    """A copy of the 3-slice CT under a new SeriesInstanceUID: no rule can choose."""
    for src in sorted(glob.glob(str(data_dir / "dcmqi/ct-3slice/*.dcm"))):
        ds = pydicom.dcmread(src)
        ds.save_as(tmp_path / f"a_{ds.InstanceNumber}.dcm")
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp_path / f"b_{ds.InstanceNumber}.dcm")
    with pytest.raises(AmbiguousSeriesError) as err:
        load_volume(tmp_path)
    assert "1.2.826.0.1.3680043.8.498.77" in str(err.value)
    vol = load_volume(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.77")
    assert vol.meta["SeriesInstanceUID"] == "1.2.826.0.1.3680043.8.498.77"


def test_seg_rtstruct_and_other_files_are_refused(tmp_path, data_dir):
    seg = data_dir / "dcmqi/seg_dicom/liver.dcm"
    rs = data_dir / "tcia/soft_tissue_sarcoma/STS_001/CT/dicom/mask/RS.dcm"
    assert dicom_object_kind(seg) == "SEG" and dicom_object_kind(rs) == "RTSTRUCT"
    with pytest.raises(VolumeError, match="SEG, not an image"):
        load_volume(seg)
    with pytest.raises(VolumeError, match="RTSTRUCT, not an image"):
        load_volume(rs)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert dicom_object_kind(text) is None
    with pytest.raises(VolumeError, match="not a supported image file") as err:
        load_volume(text)
    assert str(text) in str(err.value)
    with pytest.raises(VolumeError, match="no such file"):
        load_volume(tmp_path / "nowhere")
