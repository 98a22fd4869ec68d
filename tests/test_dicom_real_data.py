"""``load_dicom_series`` on real DICOM: TotalSegmentator CT vs its label map, a gantry-tilted head CT, one MR
slice in 9 transfer syntaxes, enhanced multi-frame MR, dicom2nifti's vendor and failing cases, pydicom's
test files and a TCIA series. Loaded volumes are cached per module to keep the file fast."""

from __future__ import annotations

import glob
from functools import cache

import nibabel as nib
import numpy as np
import pydicom
import pytest

from m2f_med.io.dicom_series import FRAME_NUMBERS, load_dicom_series
from m2f_med.io.errors import VolumeError
from m2f_med.io.volume import LPS_TO_RAS

EDGE = "dicom_edge_cases"


@cache
def _load(path: str, on_nonuniform: str = "resample"):
    return load_dicom_series(path, on_nonuniform=on_nonuniform)


def load(data_dir, rel: str, **kw):
    return _load(str(data_dir / rel), **kw)


def onto_our_grid(vol, ref_array: np.ndarray, ref_affine: np.ndarray) -> np.ndarray:
    """Re-index a reference image into our voxel grid by world position; the grids must match exactly.

    ``inv(our affine) @ ref affine`` maps reference voxel indices to ours. It must be a signed permutation
    with an integer offset (within 1e-3 voxel) that covers our grid exactly: then every reference voxel's
    world position is the world position of one of our voxels, and the re-indexing is a transpose and flips.
    """
    t = np.linalg.inv(vol.affine.numpy()) @ ref_affine
    r, off = t[:3, :3], t[:3, 3]
    assert np.abs(r - np.round(r)).max() < 1e-3 and np.abs(off - np.round(off)).max() < 1e-3, "grids differ"
    r, off = np.round(r).astype(int), np.round(off).astype(int)
    assert (np.abs(r).sum(0) == 1).all() and (np.abs(r).sum(1) == 1).all(), "not a signed permutation"
    order = [int(np.flatnonzero(r[p])[0]) for p in range(3)]  # ref axis feeding our axis p
    out = np.transpose(ref_array[..., 0] if ref_array.ndim == 4 else ref_array, order)
    for p in range(3):
        if r[p, order[p]] < 0:
            out = np.flip(out, p)
            assert off[p] == out.shape[p] - 1, "reference does not cover our grid"
        else:
            assert off[p] == 0, "reference does not cover our grid"
    assert out.shape == tuple(vol.shape[1:])
    return out


# --- TotalSegmentator: CT series vs the label map made on it -------------------------------------------


def test_totalsegmentator_ct_lines_up_with_its_label_map(data_dir):
    vol = load(data_dir, "totalsegmentator/example_ct_dicom")
    assert vol.shape == (1, 512, 512, 20)
    assert vol.meta["spacing_mm"] == pytest.approx((0.9765625, 0.9765625, 2.0))
    seg = nib.load(data_dir / "totalsegmentator/example_seg_dicom.nii.gz")
    labels = onto_our_grid(vol, np.asarray(seg.dataobj), seg.affine)  # LAS label map: flipped in y
    hu = vol[0].numpy()
    liver, spleen, aorta = (hu[labels == k].mean() for k in (5, 1, 52))
    assert 60 < liver < 120 and 60 < spleen < 120 and aorta > 120  # contrast-enhanced abdomen
    # the same after both are brought to the closest canonical (RAS) orientation
    ours = nib.as_closest_canonical(nib.Nifti1Image(hu, vol.affine.numpy()))
    theirs = nib.as_closest_canonical(seg)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    liver_mask = np.asarray(theirs.dataobj) == 5
    assert ours.get_fdata()[liver_mask].mean() == pytest.approx(liver, abs=1e-3)


def test_totalsegmentator_meta_without_uids(data_dir):
    vol = load(data_dir, "totalsegmentator/example_ct_dicom")
    m = vol.meta
    assert m["SeriesInstanceUID"] == "" and any("no SeriesInstanceUID" in p for p in m["problems"])
    assert all(u and u.startswith("1.3.12.2.1107.5.1.4.60064") for u in m["SOPInstanceUIDs"])
    assert m["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2" and m["modality"] == "CT"
    # Z increases towards the head: the first slice is the most inferior one (IPP z = -804.5)
    assert vol.affine[2, 3].item() == pytest.approx(-804.5) and vol.affine[2, 2].item() == pytest.approx(2.0)


# --- GE head CT with gantry tilt 18.5 deg and variable spacing ------------------------------------------

GE = f"{EDGE}/dcm_qa_ct_GE_gantry_tilt/In/GE"


def test_gantry_tilt_every_slice_at_its_image_position(data_dir):
    vol = load(data_dir, GE)
    a = LPS_TO_RAS @ vol.affine.numpy()
    inv = np.linalg.inv(a)
    uids = vol.meta["SOPInstanceUIDs"]
    hu = vol[0].numpy()
    files = sorted(glob.glob(str(data_dir / GE / "*.dcm")))
    on_grid = 0
    for f in files:
        ds = pydicom.dcmread(f)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        i, j, k, _ = inv @ np.r_[ipp, 1.0]
        # documented rule: the first voxel of every input slice lies on the line (0, 0, k) of the grid
        assert np.hypot(i * 0.48828125, j * 0.48828125) < 0.5
        if ds.SOPInstanceUID in uids:  # kept slices: exactly at an integer k, pixels unchanged
            kk = uids.index(ds.SOPInstanceUID)
            assert np.linalg.norm((a @ [0, 0, kk, 1])[:3] - ipp) < 0.5
            expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            np.testing.assert_array_equal(hu[..., kk], expected.T.astype(np.float32))
            on_grid += 1
    assert on_grid >= 14
    problems = " | ".join(vol.meta["problems"])
    assert "gantry tilt 18.50 deg" in problems and "non-uniform slice spacing" in problems


def test_gantry_tilt_variable_spacing_can_be_refused(data_dir):
    with pytest.raises(VolumeError, match="not uniform.*13x 4 mm.*13x 7 mm"):
        load_dicom_series(data_dir / GE, on_nonuniform="error")


# --- one Siemens MOSAIC MR image in 9 transfer syntaxes vs dcm2niix's references ------------------------


@pytest.mark.parametrize("k", range(1, 10))
def test_transfer_syntax_decodes_to_reference_voxels(data_dir, k):
    """Each file is one 384 x 384 Siemens MOSAIC (35 slices of 64 x 64 in 6 x 6 tiles); dcm2niix cuts it into
    slices, so its NIfTI is the check for our split: same grid by world position (tile-0 position fix, slice
    normal and spacing from the CSA header) and the same voxels, for every transfer syntax."""
    base = data_dir / EDGE / "dcm_qa_transfer_syntaxes"
    vol = load_dicom_series([base / "In" / f"{k}.dcm"])
    ref = nib.load(base / "Ref" / f"{k}.nii")
    assert ref.shape == (64, 64, 35) and vol.shape == (1, 64, 64, 35)
    np.testing.assert_array_equal(onto_our_grid(vol, np.asarray(ref.dataobj), ref.affine), vol[0].numpy())
    assert any("MOSAIC image split into 35 slices of 64x64" in p for p in vol.meta["problems"])
    uid = pydicom.dcmread(base / "In" / f"{k}.dcm", stop_before_pixels=True).SOPInstanceUID
    assert vol.meta["SOPInstanceUIDs"] == [uid] * 35 and vol.meta[FRAME_NUMBERS] == [None] * 35


def test_mosaic_without_csa_count_or_several_mosaics_are_clear_errors(tmp_path, data_dir):
    src = data_dir / EDGE / "dcm_qa_transfer_syntaxes/In/1.dcm"
    ds = pydicom.dcmread(src)
    del ds[0x00291010]  # CSA image header: holds NumberOfImagesInMosaic
    ds.save_as(tmp_path / "no_csa.dcm")
    with pytest.raises(VolumeError, match="no_csa.dcm.*MOSAIC image whose CSA header gives no NumberOfImagesInMosaic") as err:
        load_dicom_series([tmp_path / "no_csa.dcm"])
    assert "\n" not in str(err.value)
    (tmp_path / "fmri").mkdir()
    for t in range(2):  # two time points of one run: two mosaics, not two slices
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{t}"
        ds.PixelData = (ds.pixel_array + t).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(tmp_path / "fmri" / f"t{t}.dcm")
    with pytest.raises(VolumeError, match=r"2 different Siemens MOSAIC images: each is a whole 3-D volume .* load one file \(t0.dcm, t1.dcm\)"):
        load_dicom_series(tmp_path / "fmri")


def test_identical_mosaics_in_several_transfer_syntaxes_are_duplicates(data_dir):
    vol = load(data_dir, f"{EDGE}/dcm_qa_transfer_syntaxes")
    assert vol.shape == (1, 64, 64, 35) and "dropped 8 duplicate images (same position and same pixels)" in vol.meta["problems"]


# --- enhanced multi-frame MR ----------------------------------------------------------------------------


def test_enhanced_siemens_frames_match_reference(data_dir):
    base = data_dir / EDGE / "dcm_qa_enhanced_mr"
    vol = load(data_dir, f"{EDGE}/dcm_qa_enhanced_mr/In/Siemens/XA10/6_1.dcm")
    ref = nib.load(base / "Ref/Siemens_REST1_w_SMS_PF7-8_6.nii")
    first_volume = np.asarray(ref.dataobj)[..., 0]
    np.testing.assert_array_equal(onto_our_grid(vol, first_volume, ref.affine), vol[0].numpy())
    assert np.asarray(ref.dataobj).shape == (64, 64, 6, 4)
    assert vol.meta[FRAME_NUMBERS] == [1, 2, 3, 4, 5, 6]


def test_enhanced_philips_per_frame_rescale_and_first_frame_group(data_dir):
    base = data_dir / EDGE / "dcm_qa_enhanced_mr"
    vol = load(data_dir, f"{EDGE}/dcm_qa_enhanced_mr/In/Philips/IM_0027_fMAP.dcm")
    assert vol.shape == (1, 64, 64, 32)
    ref = nib.load(base / "Ref/Philips_WIP_B0_NS_801_e1.nii")  # magnitude, stored values
    stored = onto_our_grid(vol, np.asarray(ref.dataobj.get_unscaled(), dtype=np.float64), ref.affine)
    ds = pydicom.dcmread(base / "In/Philips/IM_0027_fMAP.dcm", stop_before_pixels=True)
    slope = float(ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope)
    np.testing.assert_allclose(vol[0].numpy(), stored * slope, rtol=1e-6)
    assert any("2 frame groups" in p and "FIELD_MAP" not in p for p in vol.meta["problems"])


def test_enhanced_series_of_four_time_points_is_refused(data_dir):
    with pytest.raises(VolumeError, match="4 different images at each of 6 positions"):
        load_dicom_series(data_dir / EDGE / "dcm_qa_enhanced_mr/In/Siemens/XA10")


# --- dicom2nifti: vendor series with ground truth, and the cases it refuses ------------------------------

D2N = f"{EDGE}/dicom2nifti_tests"


@pytest.mark.parametrize(
    "case",
    [
        "ge/anatomical/001",
        "ge/anatomical/001_implicit",
        "ge/anatomical/001_single_slice",
        "siemens/anatomical/001",
        "siemens_multiframe/anatomical/001",
        "failing/slicecount/001",
    ],
)
def test_dicom2nifti_series_equal_ground_truth(data_dir, case):
    vol = load(data_dir, f"{D2N}/{case}")
    ref = nib.load(data_dir / D2N / f"{case}_ground_truth.nii.gz")
    np.testing.assert_array_equal(onto_our_grid(vol, np.asarray(ref.dataobj), ref.affine), vol[0].numpy())


def test_dicom2nifti_gantry_tilt_is_sheared_not_refused(data_dir):
    vol = load(data_dir, f"{D2N}/failing/gantrytilting/001")
    a = LPS_TO_RAS @ vol.affine.numpy()
    for k, f in enumerate(sorted(glob.glob(str(data_dir / D2N / "failing/gantrytilting/001/*.dcm")))):
        ipp = np.asarray(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float)
        np.testing.assert_allclose((a @ [0, 0, k, 1])[:3], ipp, atol=0.05)
    assert any("gantry tilt" in p for p in vol.meta["problems"])


def test_dicom2nifti_missing_slice(data_dir):
    vol = load(data_dir, f"{D2N}/failing/sliceincrement/001")
    assert vol.shape[-1] == 5 and vol.meta["SOPInstanceUIDs"].count(None) == 1
    with pytest.raises(VolumeError, match="not uniform"):
        load_dicom_series(data_dir / D2N / "failing/sliceincrement/001", on_nonuniform="error")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("failing/notavolume/001", "4 different images at the same position"),
        ("failing/sliceorientation/001", "2 stacks"),
    ],
)
def test_dicom2nifti_not_a_volume(data_dir, case, message):
    with pytest.raises(VolumeError, match=message) as err:
        load_dicom_series(data_dir / D2N / case)
    assert case in str(err.value)


# --- pydicom test files ---------------------------------------------------------------------------------

PYD = f"{EDGE}/pydicom_testfiles"
PYDATA = f"{EDGE}/pydicom_data_pkg"


@pytest.mark.parametrize("variant", ["RLE", "bigendian", "implicit", "jp2klossless", "jpeg_ls_lossless", "padded"])
def test_mr_small_in_every_syntax_equals_uncompressed(data_dir, variant):
    ref = load(data_dir, f"{PYD}/MR_small.dcm")
    vol = load_dicom_series([data_dir / PYD / f"MR_small_{variant}.dcm"])
    np.testing.assert_array_equal(vol.numpy(), ref.numpy())
    np.testing.assert_array_equal(vol.affine.numpy(), ref.affine.numpy())


@pytest.mark.parametrize(("compressed", "raw"), [("693_J2KR", "693_UNCR"), ("MR2_J2KR", "MR2_UNCR")])
def test_jpeg2000_lossless_equals_uncompressed(data_dir, compressed, raw):
    a = load_dicom_series([data_dir / PYDATA / f"{compressed}.dcm"])
    b = load_dicom_series([data_dir / PYDATA / f"{raw}.dcm"])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_enhanced_ct_frames_sorted_along_the_normal(data_dir):
    vol = load(data_dir, f"{PYDATA}/eCT_Supplemental.dcm")
    # rows run to -x (IOP -1,0,0 / 0,1,0), so the normal points to -z: frame 2 (z -149) precedes frame 1 (z -159)
    assert vol.meta[FRAME_NUMBERS] == [2, 1]
    a = LPS_TO_RAS @ vol.affine.numpy()
    np.testing.assert_allclose(a[:3, 3], [99.5, -301.5, -149.0])
    np.testing.assert_allclose(a[:3, 2], [0, 0, -10.0])
    np.testing.assert_allclose(a[:3, 0], [-0.388672, 0, 0])


def test_single_frame_and_multiframe_copies_agree(data_dir):
    a = load(data_dir, "dcmqi/23x38x3/image")
    b = load(data_dir, "dcmqi/23x38x3/multiframe/mf.dcm")
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy())


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        (f"{PYD}/MR_truncated.dcm", "cannot decode pixel data"),
        (f"{PYDATA}/emri_small.dcm", "without per-frame geometry"),
        (f"{PYD}/JPEG2000.dcm", "without ImagePositionPatient"),
        (f"{PYD}/rtstruct.dcm", "RTSTRUCT"),
    ],
)
def test_unusable_files_fail_with_the_file_named(data_dir, rel, message):
    with pytest.raises(VolumeError, match=message) as err:
        load_dicom_series([data_dir / rel])
    assert err.value.path == str(data_dir / rel)


def test_ct_small_hounsfield_units(data_dir):
    vol = load(data_dir, f"{PYD}/CT_small.dcm")
    ds = pydicom.dcmread(data_dir / PYD / "CT_small.dcm")
    np.testing.assert_array_equal(vol[0, :, :, 0].numpy(), (ds.pixel_array.astype(np.float32) - 1024).T)
    assert vol.meta["spacing_mm"][2] == pytest.approx(5.0)  # single slice: SliceThickness


# --- TCIA -----------------------------------------------------------------------------------------------


def test_sarcoma_ct_folder_with_rtstruct_equals_its_nifti(data_dir):
    base = "tcia/soft_tissue_sarcoma/STS_001/CT"
    vol = load(data_dir, f"{base}/dicom")  # image/ and mask/RS.dcm: the RTSTRUCT is not an image series
    ref = nib.load(data_dir / base / "nifti/image/image.nii.gz")
    np.testing.assert_allclose(onto_our_grid(vol, np.asarray(ref.dataobj), ref.affine), vol[0].numpy(), atol=1e-3)
    assert vol.meta["modality"] == "CT" and len(vol.meta["SOPInstanceUIDs"]) == 59


def test_crlm_series(data_dir):
    vol = load(data_dir, "tcia/crlm_liver_mets_ct_noseg/CRLM-CT-1004/ct_dicom")
    assert vol.shape == (1, 512, 512, 41) and vol.meta["problems"] == []
    assert vol.meta["spacing_mm"] == pytest.approx((0.796875, 0.796875, 5.0))


@pytest.mark.parametrize(
    "src,implicit,little",
    [("MR_small_implicit.dcm", True, True), ("MR_small.dcm", False, True),
     ("MR_small_bigendian.dcm", False, False), ("CT_small.dcm", False, True)],
)
def test_real_files_without_file_meta_or_preamble_load_as_with_it(data_dir, tmp_path, src, implicit, little):
    """Old CD exports: no preamble, no file meta, 8.3 upper-case name without extension. pydicom infers
    implicit/explicit VR and endianness (``force=True``); the values must equal the original file's."""
    orig = data_dir / EDGE / "pydicom_testfiles" / src
    ds = pydicom.dcmread(orig)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    bare = tmp_path / "DICOM" / "IM000001"
    bare.parent.mkdir()
    ds.save_as(bare, implicit_vr=implicit, little_endian=little, enforce_file_format=False)
    assert bare.read_bytes()[:2] in (b"\x08\x00", b"\x00\x08")  # no preamble, no meta group
    before = bare.read_bytes()
    vol = load_dicom_series(tmp_path / "DICOM")
    ref = load_dicom_series(orig)
    np.testing.assert_array_equal(vol.numpy(), ref.numpy())
    np.testing.assert_allclose(vol.affine.numpy(), ref.affine.numpy())
    assert bare.read_bytes() == before  # the input is never modified


def test_compressed_file_without_file_meta_is_a_clear_error(data_dir, tmp_path):
    ds = pydicom.dcmread(data_dir / EDGE / "pydicom_testfiles" / "MR_small_jp2klossless.dcm")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.preamble = None
    ds.save_as(tmp_path / "IM1", implicit_vr=False, little_endian=True, enforce_file_format=False)
    with pytest.raises(VolumeError, match="IM1.*without file meta"):
        load_dicom_series(tmp_path / "IM1")
