"""Acceptance: open a DICOM series, segment, paint and erase, save as NIfTI and DICOM-SEG, reload both."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from napari_m2f_med._layers import layer_info
from napari_m2f_med._segment_widget import SegmentWidget
from napari_m2f_med._writer import LayerSaveError, seg_export_problem

from m2f_med.io.volume import LPS_TO_RAS

PLUGIN = "m2f-med"


def _world_zyx_of_file_voxels(path):
    """World (LPS z, y, x mm) and value of every labelled voxel of a NIfTI file, read with nibabel only."""
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj)
    ijk = np.argwhere(arr > 0)
    ras = (img.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    lps = ras @ LPS_TO_RAS[:3, :3].T
    return lps[:, ::-1], arr[tuple(ijk.T)]


def _assert_same_voxels_in_world(layer, painted, nifti_path):
    world, values = _world_zyx_of_file_voxels(nifti_path)
    index = np.rint(np.array([layer.world_to_data(w) for w in world])).astype(int)
    assert len(index) == int((painted > 0).sum())
    np.testing.assert_array_equal(painted[tuple(index.T)], values)


def test_segment_paint_erase_save_and_reload(make_napari_viewer, qtbot, data_dir, threshold_bundle, tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    widget.run(image)
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    labels = widget.result_layer
    predicted = np.array(labels.data, copy=True)

    # paint a disc of "spleen" on slice 1, erase a disc inside predicted tissue, paint one voxel on slice 0
    from scipy import ndimage

    ey, ex = np.argwhere(ndimage.binary_erosion(predicted[1] > 0, np.ones((9, 9))))[0]
    assert labels.preserve_labels  # on for model results; this user paints over other structures on purpose
    labels.preserve_labels = False
    labels.brush_size = 9
    labels.paint((1, 120, 140), 2)
    labels.paint((1, ey, ex), 0)
    labels.data_setitem((np.array([0]), np.array([5]), np.array([7])), 1)
    painted = np.array(labels.data, copy=True)
    changed = painted != predicted
    assert changed[1].sum() > 20 and changed[0, 5, 7]
    assert (painted[1, 118:123, 138:143] == 2).all() and not painted[
        1, ey - 2 : ey + 3, ex - 2 : ex + 3
    ].any()

    nifti = tmp_path / "edited.nii.gz"
    seg = tmp_path / "edited.dcm"
    labels.save(str(nifti), plugin=PLUGIN)
    labels.save(str(seg), plugin=PLUGIN)

    # NIfTI, read back with nibabel alone: the source grid and affine, and the painted voxels in world mm
    source = layer_info(image).volume
    img = nib.load(str(nifti))
    assert img.shape == tuple(source.shape[1:])
    np.testing.assert_allclose(img.affine, np.asarray(source.affine), atol=1e-5)
    _assert_same_voxels_in_world(labels, painted, nifti)

    # both files reopened through the reader: identical voxels and identical world placement
    for path in (nifti, seg):
        (reloaded,) = viewer.open(str(path), plugin=PLUGIN)
        assert reloaded._type_string == "labels"
        assert reloaded.name == ("edited (SEG)" if path.suffix == ".dcm" else "edited")  # no "edited [1]"
        np.testing.assert_array_equal(np.asarray(reloaded.data), painted)
        np.testing.assert_allclose(reloaded.scale, labels.scale, rtol=1e-6)
        np.testing.assert_allclose(reloaded.translate, labels.translate, atol=1e-4)
        np.testing.assert_allclose(reloaded.affine.affine_matrix, labels.affine.affine_matrix, atol=1e-6)
        # names survive both: the SEG holds them, the NIfTI carries an edited.labels.json sidecar
        names = dict(zip(reloaded.features["index"], reloaded.features["name"]))
        assert names[1] == "liver" and names[2] == "spleen", path
    assert (tmp_path / "edited.labels.json").is_file()


def test_new_labels_layer_over_a_ras_nifti_saves_on_the_source_grid(make_napari_viewer, data_dir, tmp_path):
    ct = (
        data_dir
        / "ivadomed_msd_spleen_and_spinalcord"
        / "ct_scan"
        / "sub-spleen2"
        / "ct"
        / "sub-spleen2_ct.nii.gz"
    )
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(ct), plugin=PLUGIN)
    viewer.layers.selection.active = image
    viewer._new_labels()  # napari's own "new labels" button: no m2f-med metadata
    labels = viewer.layers[-1]
    labels.brush_size = 5
    labels.paint((10, 40, 60), 3)
    labels.paint((12, 80, 20), 1)
    painted = np.array(labels.data, copy=True)
    out = tmp_path / "hand.nii.gz"
    labels.save(str(out), plugin=PLUGIN)
    src = nib.load(str(ct))
    saved = nib.load(str(out))
    assert saved.shape == src.shape
    np.testing.assert_allclose(saved.affine, src.affine, atol=1e-5)
    _assert_same_voxels_in_world(labels, painted, out)
    # a DICOM-SEG needs a DICOM source series: our message, not napari's "no writer"
    assert "DICOM series" in seg_export_problem(labels)
    with pytest.raises(LayerSaveError, match="x.dcm: a DICOM-SEG must reference the DICOM series"):
        labels.save(str(tmp_path / "x.dcm"), plugin=PLUGIN)
    assert not (tmp_path / "x.dcm").exists()


def test_moved_layer_is_saved_where_it_is_shown(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(data_dir / "dcmqi" / "seg_dicom" / "liver.dcm"), plugin=PLUGIN)[1:]
    labels.translate = np.asarray(labels.translate) + np.array([0.0, 0.0, 10.0])  # 10 mm towards patient left
    out = tmp_path / "moved.nii.gz"
    labels.save(str(out), plugin=PLUGIN)
    _assert_same_voxels_in_world(labels, np.asarray(labels.data), out)


def test_gantry_tilted_series_keeps_its_sheared_affine(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dicom_edge_cases" / "dcm_qa_ct_GE_gantry_tilt"), plugin=PLUGIN)
    assert not np.allclose(image.affine.affine_matrix, np.eye(4))  # the tilt lives in the layer affine
    viewer.layers.selection.active = image
    viewer._new_labels()
    labels = viewer.layers[-1]
    np.testing.assert_allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    labels.brush_size = 7
    labels.paint((20, 250, 260), 1)
    out = tmp_path / "tilt.nii.gz"
    labels.save(str(out), plugin=PLUGIN)
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, np.asarray(layer_info(image).volume.affine), atol=1e-4)
    _assert_same_voxels_in_world(labels, np.asarray(labels.data), out)


def test_sample_dicom_cannot_become_a_seg_and_says_why(make_napari_viewer, data_dir, tmp_path, recwarn, monkeypatch):
    """The TotalSegmentator sample has empty Study/SeriesInstanceUIDs: the reason shows before and on saving."""
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "totalsegmentator" / "example_ct_dicom"), plugin=PLUGIN)
    viewer.layers.selection.active = image
    viewer._new_labels()
    labels = viewer.layers[-1]
    labels.paint((10, 250, 250), 1)
    assert "has no StudyInstanceUID" in seg_export_problem(labels)
    out = tmp_path / "edited.dcm"
    for save in (
        lambda: labels.save(str(out), plugin=PLUGIN),  # the Python API
        lambda: viewer.layers.save(str(out), selected=True),  # what File > Save Selected Layer(s) calls
    ):
        viewer.layers.selection = {labels}
        with pytest.raises(LayerSaveError, match=r"edited.dcm: the DICOM series has no StudyInstanceUID"):
            save()
    # File > Save Selected Layer(s)... itself (the dialog answered with the file name): our error, which the
    # Qt event loop turns into napari's error notification, not the OSError "No data written! ..."
    from napari.plugins import _npe2
    from qtpy.QtWidgets import QFileDialog

    ext_str, writers = _npe2.file_extensions_string_for_layers([labels])
    ours = next(e for e, w in zip(ext_str.split(";;"), writers) if w.command.endswith("write_labels_dicom_seg"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ours))
    with pytest.raises(LayerSaveError, match="no StudyInstanceUID"):
        viewer.window._qt_viewer._save_layers_dialog(selected=True)
    assert not out.exists()
    assert not [w for w in recwarn if "writer" in str(w.message) or "No data written" in str(w.message)]
