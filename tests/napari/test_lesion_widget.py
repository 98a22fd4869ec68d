"""Lesion review: a lesion result opens with one id per lesion and its scores; accept / reject (undoable) /
merge / split; saving writes the kept lesions as NIfTI + instances.json and a one-segment-per-lesion SEG."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari_m2f_med._layers import layer_info
from napari_m2f_med._lesion_widget import LesionReviewWidget

from m2f_med.inference.instances import Instances, instance_table, write_instances_json
from m2f_med.io.writers import write_nifti

PLUGIN = "m2f-med"
# what predict writes for the sarcoma bundle (its inference.yaml lesion_qc), with a smaller volume limit
QC_SETTINGS = {"max_field_of_view_mm": 200, "max_volume_ml": 10, "hu_mean_range": [-150, 200]}


@pytest.fixture
def lesion_result(make_napari_viewer, data_dir, tmp_path):
    """STS_001's CT series with a hand-made lesion result of three lesions (scores 0.9, 0.4, 0.8)."""
    viewer = make_napari_viewer()
    series = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001" / "CT" / "dicom" / "image"
    (image,) = viewer.open(str(series), plugin=PLUGIN)
    volume = layer_info(image).volume
    ids = np.zeros(volume.shape[1:], np.int32)
    ids[60:100, 60:100, 20:30] = 1
    ids[120:130, 120:130, 10:14] = 2
    ids[20:30, 150:160, 40:44] = 3
    ids[20:30, 165:175, 40:44] = 3  # lesion 3 is two pieces (for the split)
    inst = Instances(ids, (ids > 0).astype(np.uint8), {1: 1, 2: 1, 3: 1}, {1: 0.9, 2: 0.4, 3: 0.8})
    rows = instance_table(inst, volume, {1: "lesion"})
    from monai.data import MetaTensor

    vol_ids = MetaTensor(ids[None].astype(np.uint8), affine=volume.affine)
    write_nifti(vol_ids, tmp_path / "instances.nii.gz", label=True)
    write_instances_json(tmp_path / "instances.json", rows, {1: "lesion"}, [1], algorithm="test model",
                         instance_map="instances.nii.gz", qc_settings=QC_SETTINGS)
    (labels,) = viewer.open(str(tmp_path / "instances.nii.gz"), plugin=PLUGIN)
    widget = LesionReviewWidget(viewer)
    widget.layer_combo.setCurrentText(labels.name)
    widget.refresh()
    return viewer, labels, widget, ids, series


def test_lesions_listed_by_score_with_low_flag(lesion_result):
    _viewer, labels, widget, ids, _series = lesion_result
    assert set(np.unique(np.asarray(labels.data))) == {0, 1, 2, 3}  # one id per lesion
    assert [r["label"] for r in widget.rows] == [1, 3, 2]  # by decreasing score
    assert [r["flagged"] for r in widget.rows] == [False, False, True]  # 0.4 < LOW threshold 0.5
    assert widget.rows[0]["volume_ml"] == pytest.approx((ids == 1).sum() * 0.977 * 0.977 * 3.27 / 1000, rel=0.01)
    assert widget.table.item(2, 6).text() == "LOW"


def test_lesion_qc_from_the_settings_predict_wrote(lesion_result):
    """The table's QC column is the lesion QC (m2f_med.inference.lesion_qc) with instances.json's settings."""
    _viewer, _labels, widget, ids, _series = lesion_result
    by = {r["label"]: r for r in widget.rows}
    assert all(r["qc"] in ("ok", "check", "fail") for r in widget.rows)
    assert "low score 0.40 (< 0.7)" in by[2]["qc_reasons"]
    assert (ids == 1).sum() * 0.977 * 0.977 * 3.27 / 1000 > 10  # lesion 1 is above the 10 mL limit
    assert any("larger than any training lesion" in s for s in by[1]["qc_reasons"])
    assert not any("larger than any training lesion" in s for s in by[2]["qc_reasons"])
    qc_col = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())].index("QC")
    assert widget.table.item([r["label"] for r in widget.rows].index(2), qc_col).text() == by[2]["qc"]


def test_reject_is_undoable_and_save_writes_the_kept_lesions(lesion_result, tmp_path):
    _viewer, labels, widget, ids, series = lesion_result
    removed = widget.reject(2)
    assert removed == int((ids == 2).sum()) and not (np.asarray(labels.data) == 2).any()
    labels.undo()
    assert int((np.asarray(labels.data) == 2).sum()) == removed
    widget.reject(2)
    widget.accept(1)
    out = tmp_path / "review"
    out.mkdir()
    written = widget.save(str(out / "instances.nii.gz"))
    saved = np.asarray(nib.load(out / "instances.nii.gz").dataobj)
    expected = np.where(ids == 2, 0, ids)
    assert np.array_equal(saved, expected)  # instance ids unchanged, on the source grid
    doc = json.loads((out / "instances.json").read_text())
    assert [(r["id"], r["status"]) for r in doc["instances"]] == [(1, "accepted"), (3, "unreviewed")]
    assert doc["qc_settings"]["max_volume_ml"] == 10 and all(r["qc"] for r in doc["instances"])
    assert any("larger than any training lesion" in s for s in doc["instances"][0]["qc_reasons"])
    seg_path = out / "instances.seg.dcm"
    assert str(seg_path) in written
    seg = pydicom.dcmread(seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion 1", "lesion 3"]
    assert len({s.TrackingUID for s in seg.SegmentSequence}) == 2
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in seg.PerFrameFunctionalGroupsSequence}
    assert refs <= sources
    from m2f_med.io import read_dicom_seg

    back, _ = read_dicom_seg(seg_path, reference=None)
    assert int((np.asarray(back[0]) > 0).sum()) == int((expected > 0).sum())


def test_merge_and_split(lesion_result):
    _viewer, labels, widget, ids, _series = lesion_result
    moved = widget.merge(1, 2)
    data = np.asarray(labels.data)
    assert moved == int((ids == 2).sum()) and not (data == 2).any()
    assert int((data == 1).sum()) == int(((ids == 1) | (ids == 2)).sum())
    new = widget.split_components(3)
    assert len(new) == 1 and int((np.asarray(labels.data) == new[0]).sum()) == 400
    assert {r["label"] for r in widget.rows} == {1, 3, new[0]}
    painted = widget.start_split(1)
    assert labels.selected_label == painted and labels.mode == "paint" and painted not in (1, 3, new[0])


def test_nifti_ct_gets_the_qc_predict_gave(make_napari_viewer, data_dir, tmp_path):
    """A NIfTI CT has no modality, and napari's grid is (Z, Y, X): the widget still runs the CT checks (from
    the modality predict recorded) and measures the field of view on the source grid. STS_043 is a training
    crop 151 x 162 mm in-plane but 229 mm head to foot: not "larger than the training images"."""
    viewer = make_napari_viewer()
    ct = data_dir / "ibsi_sts_ct" / "STS_043" / "CT_image.nii.gz"
    (image,) = viewer.open(str(ct), plugin=PLUGIN)
    volume = layer_info(image).volume
    assert not volume.meta.get("modality")
    hu = np.asarray(volume[0])
    ids = np.zeros(hu.shape, np.int32)
    bone = np.argwhere(hu > 600)  # cortical bone of the femur: a "lesion" there is not soft tissue
    c = bone[len(bone) // 2]
    ids[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = 1
    ids[ids == 1] = np.where(hu[ids == 1] > 300, 1, 0)
    inst = Instances(ids, (ids > 0).astype(np.uint8), {1: 1}, {1: 0.95})
    rows = instance_table(inst, volume, {1: "lesion"})
    assert rows[0]["mean_intensity"] > 300
    from monai.data import MetaTensor

    write_nifti(MetaTensor(ids[None].astype(np.uint8), affine=volume.affine), tmp_path / "instances.nii.gz",
                label=True)
    write_instances_json(tmp_path / "instances.json", rows, {1: "lesion"}, [1], instance_map="instances.nii.gz",
                         qc_settings=QC_SETTINGS, qc_scan={"modality": "CT", "reasons": []})
    (labels,) = viewer.open(str(tmp_path / "instances.nii.gz"), plugin=PLUGIN)
    widget = LesionReviewWidget(viewer)
    widget.layer_combo.setCurrentText(labels.name)
    widget.refresh()
    (row,) = widget.rows
    assert row["qc"] == "fail" and "bone or contrast" in row["qc_reasons"][0]
    assert not any("larger than the training images" in s for s in row["qc_reasons"])
    (tmp_path / "review").mkdir()
    widget.save(str(tmp_path / "review" / "instances.nii.gz"))
    doc = json.loads((tmp_path / "review" / "instances.json").read_text())
    assert doc["instances"][0]["qc"] == "fail" and doc["qc_scan"]["modality"] == "CT"
    assert doc["qc_scan"]["reasons"] == []
