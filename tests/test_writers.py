"""write_nifti: exact affine, sform/qform codes, smallest label dtype, atomic output, inputs untouched."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import NIFTI_XFORM_CODES, load_image_file
from m2f_med.io.volume import make_volume
from m2f_med.io.writers import label_dtype, write_nifti

_C, _S = np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15))
# rotated, anisotropic, translated: a qform can hold it exactly
AFFINE = np.array(
    [[-0.7 * _C, 0.8 * _S, 0.0, 120.25], [-0.7 * _S, -0.8 * _C, 0.0, 80.5], [0.0, 0.0, 3.0, -410.0], [0, 0, 0, 1.0]]
)


def _labels(max_value: int, dtype=np.int32):
    arr = np.zeros((6, 5, 4), dtype=dtype)
    arr[1, 2, 3] = max_value
    arr[0, 0, 0] = 1
    return make_volume(arr, AFFINE)


@pytest.mark.parametrize(("max_value", "expected"), [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16)])
def test_label_map_gets_smallest_dtype_and_exact_affine(tmp_path, max_value, expected):
    vol = _labels(max_value)
    out = write_nifti(vol, tmp_path / "lab.nii.gz")
    img = nib.load(str(out))
    assert img.get_data_dtype() == expected
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), vol.numpy()[0])
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert scode == 1 and qcode == 1
    np.testing.assert_allclose(sform, AFFINE, atol=1e-5)  # NIfTI stores float32
    back = load_image_file(out, label=True)
    np.testing.assert_allclose(back.affine.numpy(), AFFINE, atol=1e-5)
    assert back.meta["problems"] == []


@pytest.mark.parametrize(("value", "match"), [(-1, "negative"), (65536, "above 65535")])
def test_label_values_outside_uint16_are_refused(tmp_path, value, match):
    out = tmp_path / "bad.nii.gz"
    with pytest.raises(VolumeError, match=match) as err:
        write_nifti(_labels(value), out)
    assert str(out) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_float_label_with_fractions_is_refused():
    with pytest.raises(VolumeError, match="non-integer"):
        label_dtype(np.array([0.0, 0.5]))
    assert label_dtype(np.array([0.0, 3.0])) == np.uint8


def test_image_is_written_as_float32(tmp_path):
    data = np.linspace(-1000, 1000, 120, dtype=np.float64).reshape(6, 5, 4)
    out = write_nifti(make_volume(data, AFFINE), tmp_path / "ct.nii")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asanyarray(img.dataobj), data, rtol=1e-6)


def test_integer_image_written_as_image_when_label_false(tmp_path):
    data = np.arange(-60, 60, dtype=np.int16).reshape(6, 5, 4)
    out = write_nifti(make_volume(data, AFFINE), tmp_path / "ct.nii.gz", label=False)
    assert nib.load(str(out)).get_data_dtype() == np.float32


def test_sheared_affine_is_exact_in_the_sform(tmp_path):
    """Gantry tilt gives a sheared affine; only the sform can hold it, the qform is the nearest rigid one."""
    sheared = AFFINE.copy()
    sheared[1, 2] = 0.9  # slices step along y as well as z
    vol = make_volume(np.zeros((4, 4, 4), np.uint8) + 1, sheared)
    out = write_nifti(vol, tmp_path / "tilt.nii.gz")
    back = load_image_file(out, label=True)
    np.testing.assert_allclose(back.affine.numpy(), sheared, atol=1e-5)
    assert any("disagree" in p and "sform" in p for p in back.meta["problems"])


def test_source_transform_codes_are_kept(tmp_path):
    vol = _labels(3)
    vol.meta[NIFTI_XFORM_CODES] = {"sform_code": 2, "qform_code": 0}
    img = nib.load(str(write_nifti(vol, tmp_path / "a.nii.gz")))
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 2


def test_failed_write_leaves_no_file_and_keeps_an_existing_one(tmp_path, monkeypatch):
    out = tmp_path / "mask.nii.gz"
    write_nifti(_labels(2), out)
    before = out.read_bytes()

    def boom(img, filename):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(_labels(7), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_input_volume_is_not_modified(tmp_path):
    vol = _labels(300, dtype=np.int64)
    data_before = vol.clone()
    affine_before = vol.affine.clone()
    write_nifti(vol, tmp_path / "x.nii.gz")
    assert torch.equal(vol.as_tensor(), data_before.as_tensor()) and vol.dtype == torch.int64
    assert torch.equal(vol.affine, affine_before)


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(VolumeError, match=r"\.nii"):
        write_nifti(_labels(1), tmp_path / "x.nrrd")
    with pytest.raises(VolumeError, match="MetaTensor"):
        write_nifti(torch.zeros(1, 2, 2, 2), tmp_path / "x.nii.gz")
    two = make_volume(np.zeros((2, 3, 3, 3), np.uint8), AFFINE)
    with pytest.raises(VolumeError, match="one channel"):
        write_nifti(two, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_round_trip_of_real_label_keeps_voxels_and_geometry(tmp_path, data_dir):
    src = load_image_file(data_dir / "tcia/nsclc_radiomics_LUNG1-001/derived_nifti/lung1_001_label.nii.gz", label=True)
    out = write_nifti(src, tmp_path / "lung.nii.gz")
    back = load_image_file(out, label=True)
    assert nib.load(str(out)).get_data_dtype() == np.uint8
    assert torch.equal(back.as_tensor(), src.as_tensor())
    np.testing.assert_allclose(back.affine.numpy(), src.affine.numpy(), atol=1e-5)


def test_label_names_sidecar_round_trip_and_fallback(tmp_path):
    from m2f_med.io.label_names import label_names_path, read_label_names_beside, write_label_names_beside

    mask = tmp_path / "case1" / "mask.nii.gz"
    assert label_names_path(mask) == tmp_path / "case1" / "mask.labels.json"
    assert read_label_names_beside(mask) == {}
    (tmp_path / "case1").mkdir()
    (tmp_path / "case1" / "labels.json").write_text('{"1": "liver", "2": "spleen"}')  # m2f-med predict's
    assert read_label_names_beside(mask) == {1: "liver", 2: "spleen"}
    write_label_names_beside(mask, {3: "aorta"})  # the file's own sidecar wins
    assert read_label_names_beside(mask) == {3: "aorta"}
    label_names_path(mask).write_text("[1, 2]")
    with pytest.raises(VolumeError, match="mask.labels.json: not a label-name file"):
        read_label_names_beside(mask)
    # another tool's labels.json in a data folder (e.g. pyradiomics/labels.json) is not ours: ignored
    label_names_path(mask).unlink()
    (tmp_path / "case1" / "labels.json").write_text('{"brain1/brain2 (MR)": {"1": "lesion"}}')
    assert read_label_names_beside(mask) == {}
