"""NIfTI / NRRD / MHA / GIPL reading: affine rules, scaling, extra axes, label dtypes, geometry vs nibabel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import NIFTI_XFORM_CODES, image_format, load_image_file

# an oblique, anisotropic affine with a translation, so axis swaps or sign errors cannot cancel out
_THETA = np.deg2rad(20)
AFFINE = np.array(
    [
        [0.8 * np.cos(_THETA), -0.9 * np.sin(_THETA), 0.0, -100.5],
        [0.8 * np.sin(_THETA), 0.9 * np.cos(_THETA), 0.0, 42.25],
        [0.0, 0.0, 2.5, -300.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _ramp(shape=(5, 6, 7), dtype=np.int16):
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def _save(tmp_path, img, name="img.nii.gz"):
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def test_nifti_reads_voxels_and_affine(tmp_path):
    data = _ramp()
    path = _save(tmp_path, nib.Nifti1Image(data, AFFINE))
    vol = load_image_file(path, modality="CT")
    assert tuple(vol.shape) == (1, 5, 6, 7) and vol.dtype.is_floating_point
    np.testing.assert_array_equal(vol.numpy()[0], data)
    np.testing.assert_allclose(vol.affine.numpy(), AFFINE, atol=1e-5)
    assert vol.meta["source_format"] == "nifti" and vol.meta["modality"] == "CT"
    assert vol.meta["source_paths"] == [str(path)] and vol.meta["problems"] == []
    assert vol.meta["spacing_mm"] == pytest.approx((0.8, 0.9, 2.5), abs=1e-5)


def test_sform_wins_over_disagreeing_qform_and_is_reported(tmp_path):
    img = nib.Nifti1Image(_ramp(), None)
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    img.set_qform(qform, code=1)
    img.set_sform(AFFINE, code=2)
    vol = load_image_file(_save(tmp_path, img))
    np.testing.assert_allclose(vol.affine.numpy(), AFFINE, atol=1e-5)
    assert any("sform and qform disagree" in p and "code 2" in p for p in vol.meta["problems"])
    assert vol.meta[NIFTI_XFORM_CODES] == {"sform_code": 2, "qform_code": 1}


def test_qform_used_when_sform_code_is_zero(tmp_path):
    img = nib.Nifti1Image(_ramp(), None)
    img.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=0)
    img.set_qform(AFFINE, code=1)
    vol = load_image_file(_save(tmp_path, img))
    np.testing.assert_allclose(vol.affine.numpy(), AFFINE, atol=1e-4)
    assert vol.meta["problems"] == []


def test_no_transform_codes_fall_back_to_voxel_size_and_say_so(tmp_path):
    img = nib.Nifti1Image(_ramp(), None)
    img.header.set_zooms((1.5, 2.0, 3.0))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    vol = load_image_file(_save(tmp_path, img))
    assert vol.meta["spacing_mm"] == pytest.approx((1.5, 2.0, 3.0))
    assert any("no sform or qform" in p for p in vol.meta["problems"])


def _patch_scaling(path, slope, inter):
    """Overwrite scl_slope / scl_inter in a stored .nii (header offsets 112 / 116, NIfTI-1), as other
    writers leave them; nibabel itself would recompute the scaling on save."""
    import struct

    raw = bytearray(path.read_bytes())
    raw[112:120] = struct.pack("<ff", slope, inter)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_scl_slope_zero_or_nan_means_no_scaling(tmp_path, slope):
    data = _ramp()
    path = tmp_path / "s.nii"
    nib.Nifti1Image(data, AFFINE).to_filename(str(path))
    _patch_scaling(path, slope, 1000.0)
    with open(path, "rb") as f:  # the header as stored (nibabel's image header resets the scaling fields)
        stored = nib.Nifti1Header.from_fileobj(f)
    assert float(stored["scl_inter"]) == 1000.0
    vol = load_image_file(path)
    np.testing.assert_array_equal(vol.numpy()[0], data)


def test_scl_slope_and_inter_are_applied_to_images(tmp_path):
    stored = _ramp(dtype=np.int16)
    path = tmp_path / "scaled.nii"
    nib.Nifti1Image(stored, AFFINE).to_filename(str(path))
    _patch_scaling(path, 2.0, -1024.0)
    vol = load_image_file(path)
    np.testing.assert_allclose(vol.numpy()[0], stored * 2.0 - 1024.0)


def test_4d_image_needs_a_volume_index(tmp_path):
    data = _ramp((4, 5, 6, 3))
    path = _save(tmp_path, nib.Nifti1Image(data, AFFINE))
    with pytest.raises(VolumeError, match=r"holds 3 volumes.*--volume-index") as err:
        load_image_file(path)
    assert str(path) in str(err.value)
    vol = load_image_file(path, volume_index=2)
    np.testing.assert_array_equal(vol.numpy()[0], data[..., 2])
    assert "took volume 2 of 3" in vol.meta["problems"]
    with pytest.raises(VolumeError, match="out of range"):
        load_image_file(path, volume_index=3)


def test_trailing_size_one_axes_are_dropped(tmp_path):
    data = _ramp((4, 5, 6))
    path = _save(tmp_path, nib.Nifti1Image(data[..., None, None], AFFINE))
    vol = load_image_file(path)
    assert tuple(vol.shape) == (1, 4, 5, 6)
    np.testing.assert_array_equal(vol.numpy()[0], data)


def test_2d_image_gets_one_slice(tmp_path):
    data = _ramp((4, 5))
    vol = load_image_file(_save(tmp_path, nib.Nifti1Image(data, AFFINE)))
    assert tuple(vol.shape) == (1, 4, 5, 1)


def test_label_keeps_integers_and_rounds_or_refuses_floats(tmp_path):
    labels = (np.arange(120).reshape(4, 5, 6) % 3).astype(np.uint8)
    vol = load_image_file(_save(tmp_path, nib.Nifti1Image(labels, AFFINE), "l.nii.gz"), label=True)
    assert vol.dtype == torch_dtype("uint8")
    np.testing.assert_array_equal(vol.numpy()[0], labels)

    almost = labels.astype(np.float32) + np.float32(1e-4)
    vol = load_image_file(_save(tmp_path, nib.Nifti1Image(almost, AFFINE), "f.nii.gz"), label=True)
    assert not vol.dtype.is_floating_point
    np.testing.assert_array_equal(vol.numpy()[0], labels)
    assert any("rounded" in p for p in vol.meta["problems"])

    soft = labels.astype(np.float32) * 0.5
    path = _save(tmp_path, nib.Nifti1Image(soft, AFFINE), "soft.nii.gz")
    with pytest.raises(VolumeError, match="non-integer"):
        load_image_file(path, label=True)


def test_uint16_labels_become_int32_for_torch(tmp_path):
    labels = np.zeros((3, 3, 3), np.uint16)
    labels[1, 1, 1] = 60000
    vol = load_image_file(_save(tmp_path, nib.Nifti1Image(labels, AFFINE)), label=True)
    assert vol.dtype == torch_dtype("int32") and int(vol.max()) == 60000


def torch_dtype(name):
    import torch

    return getattr(torch, name)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr"])
def test_itk_formats_match_nibabel_geometry(tmp_path, suffix):
    """The same image written by SimpleITK as NRRD/MHA and as NIfTI: our ITK path (LPS direction/origin ->
    RAS) and nibabel's NIfTI path must agree on every voxel and on the affine."""
    data = _ramp((5, 6, 7))  # (x, y, z)
    img = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # sitk wants (z, y, x)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((12.5, -30.0, 77.0))
    c, s = np.cos(_THETA), np.sin(_THETA)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / f"a{suffix}"))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    ours = load_image_file(tmp_path / f"a{suffix}")
    ref = load_image_file(tmp_path / "a.nii.gz")
    assert ours.meta["source_format"] != "nifti" and ref.meta["source_format"] == "nifti"
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    # and against first principles: voxel (1, 2, 3) lies at origin + D @ (spacing * index), in LPS
    lps = np.array([12.5, -30.0, 77.0]) + np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ (
        np.array([0.8, 0.9, 2.5]) * np.array([1, 2, 3])
    )
    ras = ours.affine.numpy() @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-6)


def test_itk_vector_image_needs_volume_index(tmp_path):
    arr = np.stack([_ramp((3, 4, 5)), -_ramp((3, 4, 5))], axis=-1)  # (z, y, x, components)
    img = sitk.GetImageFromArray(arr, isVector=True)
    sitk.WriteImage(img, str(tmp_path / "v.mha"))
    with pytest.raises(VolumeError, match="2 volumes"):
        load_image_file(tmp_path / "v.mha")
    vol = load_image_file(tmp_path / "v.mha", volume_index=1)
    np.testing.assert_array_equal(vol.numpy()[0], -_ramp((3, 4, 5)).transpose(2, 1, 0))


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(VolumeError) as err:
        load_image_file(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(VolumeError, match="file not found"):
        load_image_file(tmp_path / "missing.nrrd")
    trunc = tmp_path / "trunc.nrrd"
    trunc.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n\x00\x01")
    with pytest.raises(VolumeError, match="trunc.nrrd"):
        load_image_file(trunc)


def test_image_format_by_suffix():
    assert image_format("a/b.NII.GZ") == "nifti" and image_format("x.seg.nrrd") == "nrrd"
    assert image_format("x.mhd") == "mha" and image_format("x.gipl.gz") == "gipl"
    assert image_format("x.dcm") is None and image_format("folder") is None


def test_real_nrrd_label_lies_on_its_ct_grid(data_dir):
    """dcmqi's liver label (NRRD) and the CT series it was drawn on share one grid."""
    from m2f_med.io.loader import load_volume

    label = load_image_file(data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd", label=True)
    ct = load_volume(data_dir / "dcmqi/ct-3slice")
    assert tuple(label.shape) == tuple(ct.shape) == (1, 512, 512, 3)
    np.testing.assert_allclose(label.affine.numpy(), ct.affine.numpy(), atol=1e-3)
    assert set(np.unique(label.numpy())) == {0, 1}
    # the liver is soft tissue: its mean HU is in the liver range
    assert 20 < float(ct.numpy()[label.numpy() == 1].mean()) < 120


def test_real_gipl_and_nifti(data_dir):
    mr = load_image_file(data_dir / "itksnap_mricrop/MRIcrop-orig.gipl.gz")
    seg = load_image_file(data_dir / "itksnap_mricrop/MRIcrop-seg.gipl.gz", label=True)
    assert tuple(mr.shape) == tuple(seg.shape) == (1, 78, 110, 64)
    assert seg.dtype == torch_dtype("uint8") and int(seg.max()) > 1
    ct = load_image_file(data_dir / "totalsegmentator/example_ct_sm.nii.gz")
    assert ct.meta["spacing_mm"] == pytest.approx((3.0, 3.0, 3.0))
