"""RTSTRUCT → label map: world-position placement, XOR holes, tolerances, overlaps, and real contours."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import load_image_file
from m2f_med.io.rtstruct import load_rtstruct, rtstruct_masks
from m2f_med.io.volume import make_volume

FOR = "1.2.826.0.1.3680043.8.498.1"
# voxel (i, j, k) -> RAS (-i, -j, 2k): i.e. LPS (i, j, 2k), so contour x/y are voxel indices and z = 2k
REF_AFFINE = np.diag([-1.0, -1.0, 2.0, 1.0])


def _reference(shape=(20, 20, 5), affine=REF_AFFINE, **meta):
    return make_volume(np.zeros(shape, np.float32), affine, FrameOfReferenceUID=meta.pop("for_uid", FOR), **meta)


def _square(x0, x1, z, y0=None, y1=None):
    y0, y1 = (x0, x1) if y0 is None else (y0, y1)
    return [x0, y0, z, x1, y0, z, x1, y1, z, x0, y1, z]


def _write_rtstruct(path, rois, for_uid=FOR):
    """rois: list of (name, [(geometric type, flat LPS points), ...])."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ref = Dataset()
    ref.FrameOfReferenceUID = for_uid
    ds.ReferencedFrameOfReferenceSequence = [ref]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for n, (name, contours) in enumerate(rois, start=10):  # ROI numbers need not start at 1
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, for_uid
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = []
        for kind, pts in contours:
            c = Dataset()
            c.ContourGeometricType = kind
            c.NumberOfContourPoints = len(pts) // 3
            c.ContourData = [f"{v:.6g}" for v in pts]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_square_is_filled_on_its_slice_by_pixel_centres(tmp_path):
    rs = _write_rtstruct(tmp_path / "rs.dcm", [("box", [("CLOSED_PLANAR", _square(1.5, 8.5, 4.0))])])
    label, names = load_rtstruct(rs, _reference())
    arr = label.numpy()[0]
    assert names == {1: "box"} and label.dtype.is_floating_point is False
    expected = np.zeros((20, 20, 5), bool)
    expected[2:9, 2:9, 2] = True  # pixel centres 2..8 lie inside 1.5..8.5; z = 4 mm is slice 2
    np.testing.assert_array_equal(arr > 0, expected)
    np.testing.assert_allclose(label.affine.numpy(), REF_AFFINE)
    assert label.meta["modality"] == "RTSTRUCT" and label.meta["problems"] == []


def test_inner_contour_in_the_same_plane_is_a_hole(tmp_path):
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        [("ring", [("CLOSED_PLANAR", _square(1.5, 12.5, 2.0)), ("CLOSED_PLANAR", _square(4.5, 8.5, 2.0))])],
    )
    mask = rtstruct_masks(rs, _reference())[0].mask
    assert mask[:, :, 1].sum() == 11 * 11 - 4 * 4
    assert not mask[5:9, 5:9, 1].any() and mask[2, 2, 1] and mask[12, 12, 1]


def test_boundary_fill_adds_the_contour_line(tmp_path):
    rs = _write_rtstruct(tmp_path / "rs.dcm", [("box", [("CLOSED_PLANAR", _square(2.3, 7.7, 4.0))])])
    centre = rtstruct_masks(rs, _reference())[0].mask
    boundary = rtstruct_masks(rs, _reference(), fill="boundary")[0].mask
    assert centre[3:8, 3:8, 2].all() and centre.sum() == 25  # centres 3..7 lie inside 2.3..7.7
    # OpenCV style: vertices rounded to 2 and 8, the line through them is part of the ROI
    assert boundary[2:9, 2:9, 2].all() and boundary.sum() == 49
    with pytest.raises(ValueError, match="fill"):
        rtstruct_masks(rs, _reference(), fill="outline")


def test_placement_is_by_world_position_not_array_order(tmp_path):
    """The same contour on a reference stored in the opposite x/z order lands on the same world voxels."""
    rs = _write_rtstruct(tmp_path / "rs.dcm", [("box", [("CLOSED_PLANAR", _square(1.5, 5.5, 6.0, 10.5, 14.5))])])
    a = rtstruct_masks(rs, _reference())[0].mask
    flipped = REF_AFFINE @ np.array([[-1, 0, 0, 19], [0, 1, 0, 0], [0, 0, -1, 4], [0, 0, 0, 1.0]])
    b = rtstruct_masks(rs, _reference(affine=flipped))[0].mask
    assert a.sum() == 4 * 4 and a[2:6, 11:15, 3].all()
    np.testing.assert_array_equal(b, a[::-1, :, ::-1])


def test_off_plane_outside_and_non_polygon_contours_are_skipped_and_noted(tmp_path):
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        [
            (
                "mixed",
                [
                    ("CLOSED_PLANAR", _square(1.5, 4.5, 4.9)),  # 0.9 mm from slice 2 (spacing 2 mm)
                    ("CLOSED_PLANAR", _square(1.5, 4.5, 100.0)),  # beyond the last slice
                    ("POINT", [3.0, 3.0, 4.0]),
                ],
            )
        ],
    )
    roi = rtstruct_masks(rs, _reference())[0]
    assert roi.mask[:, :, 2].sum() == 9 and roi.mask.sum() == 9
    notes = " ".join(roi.problems)
    assert "outside the volume" in notes and "point contours" in notes
    with pytest.raises(VolumeError, match="no contour"):  # strict tolerance: nothing left to draw
        rtstruct_masks(rs, _reference(), z_tolerance_mm=0.5)


def test_overlapping_rois_smallest_wins_and_ids_follow_file_order(tmp_path):
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        [
            ("tumour", [("CLOSED_PLANAR", _square(3.5, 5.5, 4.0))]),
            ("organ", [("CLOSED_PLANAR", _square(0.5, 10.5, 4.0))]),
        ],
    )
    label, names = load_rtstruct(rs, _reference())
    arr = label.numpy()[0]
    assert names == {1: "tumour", 2: "organ"}
    assert (arr == 1).sum() == 4 and (arr == 2).sum() == 100 - 4
    assert any("4 voxels lie in several ROIs" in p for p in label.meta["problems"])


def test_empty_roi_is_noted(tmp_path):
    rs = _write_rtstruct(
        tmp_path / "rs.dcm",
        [("box", [("CLOSED_PLANAR", _square(1.5, 3.5, 2.0))]), ("nothing", [])],
    )
    label, names = load_rtstruct(rs, _reference())
    assert names[2] == "nothing" and not (label.numpy() == 2).any()
    assert any("'nothing' has no contour" in p for p in label.meta["problems"])


def test_wrong_frame_of_reference_wrong_file_and_wrong_reference_are_errors(tmp_path):
    rs = _write_rtstruct(tmp_path / "rs.dcm", [("box", [("CLOSED_PLANAR", _square(1.5, 3.5, 2.0))])])
    with pytest.raises(VolumeError, match="frame of reference"):
        load_rtstruct(rs, _reference(for_uid="1.2.3.4"))
    far = REF_AFFINE.copy()
    far[2, 3] = 500.0
    with pytest.raises(VolumeError, match="right reference"):
        load_rtstruct(rs, _reference(affine=far))
    other = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(rs)
    ds.Modality = "CT"
    del ds.StructureSetROISequence
    ds.save_as(other)
    with pytest.raises(VolumeError, match="not an RT Structure Set") as err:
        load_rtstruct(other, _reference())
    assert str(other) in str(err.value)
    with pytest.raises(VolumeError, match="file not found"):
        load_rtstruct(tmp_path / "missing.dcm", _reference())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("case", ["STS_001", "STS_002", "STS_003"])
def test_sarcoma_rtstruct_matches_its_nifti_mask(data_dir, case):
    """The RTSTRUCT references SOP instances that the cropped series lacks; placement is by position."""
    from m2f_med.io.loader import load_volume

    base = data_dir / "tcia/soft_tissue_sarcoma" / case / "CT"
    ct = load_volume(base / "dicom/image")
    rs = base / "dicom/mask/RS.dcm"
    referenced = {
        str(img.ReferencedSOPInstanceUID)
        for rc in pydicom.dcmread(rs).ROIContourSequence
        for c in rc.ContourSequence
        for img in c.get("ContourImageSequence", [])
    }
    assert referenced and not referenced & set(ct.meta["SOPInstanceUIDs"])  # the UIDs really are missing
    label, names = load_rtstruct(rs, ct)
    truth = load_image_file(base / "nifti/mask/mask.nii.gz", label=True)
    np.testing.assert_allclose(truth.affine.numpy(), ct.affine.numpy(), atol=1e-3)
    assert names == {1: "GTV_Mass_CT"}
    assert _dice(label.numpy()[0] > 0, truth.numpy()[0] > 0) >= 0.97


def test_lung1_rtstruct_matches_its_label_map_on_a_nifti_grid(data_dir):
    """LUNG1's label map was drawn with rt-utils (OpenCV fillPoly, boundary pixels included): compare with
    the same convention. The reference grid comes from NIfTI (no SOP UIDs at all)."""
    base = data_dir / "tcia/nsclc_radiomics_LUNG1-001"
    truth = load_image_file(base / "derived_nifti/lung1_001_label.nii.gz", label=True)  # the CT's grid
    rois = rtstruct_masks(base / "rtstruct/RS_LUNG1-001.dcm", truth, fill="boundary")
    ids = {"Lung-Left": 1, "Lung-Right": 2, "Spinal-Cord": 3, "GTV-1": 4}
    assert sorted(r.name for r in rois) == sorted(ids)
    t = truth.numpy()[0]
    for roi in rois:
        # GTV was painted over the lung in the truth, so compare lungs outside the GTV
        where = t != 4 if roi.name.startswith("Lung") else np.ones_like(t, bool)
        assert _dice(roi.mask & where, (t == ids[roi.name]) & where) >= 0.97, roi.name
