"""Review widget: volumes (mL), mean HU, confidence flags, jump to a structure, hide/show, fill between slices."""

from __future__ import annotations

import numpy as np
import pytest
from napari_m2f_med._layers import labels_layer_data, layer_info
from napari_m2f_med._review_widget import ReviewWidget

from m2f_med.io.volume import make_volume

PLUGIN = "m2f-med"


@pytest.fixture
def reviewed(make_napari_viewer, data_dir):
    """The anisotropic spleen CT (0.8 x 0.8 x 5 mm) with a model-like Labels layer of two structures."""
    viewer = make_napari_viewer()
    ct = (
        data_dir
        / "ivadomed_msd_spleen_and_spinalcord"
        / "ct_scan"
        / "sub-spleen2"
        / "ct"
        / "sub-spleen2_ct.nii.gz"
    )
    (image,) = viewer.open(str(ct), plugin=PLUGIN)
    volume = layer_info(image).volume
    label = np.zeros(volume.shape[1:], dtype=np.uint8)
    label[40:60, 50:70, 3:9] = 1
    label[100:110, 20:30, 20:22] = 2
    names = {1: "liver", 2: "spleen", 3: "aorta"}
    data, kwargs, _ = labels_layer_data(
        make_volume(label, np.asarray(volume.affine)), names, reference=volume, confidence={1: 0.9, 2: 0.3}
    )
    labels = viewer.add_labels(data, **kwargs)
    widget = ReviewWidget(viewer)
    widget.layer_combo.setCurrentText(labels.name)
    widget.refresh()
    return viewer, image, labels, widget, volume, label


def test_table_statistics_match_an_independent_computation(reviewed):
    _viewer, _image, _labels, widget, volume, label = reviewed
    rows = {r["label"]: r for r in widget.rows}
    voxel_ml = float(np.prod(volume.meta["spacing_mm"])) / 1000.0
    hu = volume.numpy()[0]
    for lab in (1, 2):
        assert rows[lab]["volume_ml"] == pytest.approx(
            (label == lab).sum() * voxel_ml, abs=1e-4
        )  # rounded to 0.1 uL
        assert rows[lab]["mean_intensity"] == pytest.approx(hu[label == lab].mean(), abs=1e-2)
    assert rows[3]["voxels"] == 0  # named by the model but absent
    assert rows[1]["intensity_unit"] == "HU" or volume.meta["modality"] != "CT"
    assert not rows[1]["flagged"] and rows[2]["flagged"]
    assert widget.table.item(1, 6).text() == "LOW"
    widget.threshold.setValue(0.2)
    assert not any(r["flagged"] for r in widget.rows)


def test_jump_moves_the_slider_to_the_structure_and_selects_it(reviewed):
    viewer, _image, labels, widget, _volume, _label = reviewed
    world = widget.jump_to(2)
    assert labels.selected_label == 2
    step = viewer.dims.current_step[0]
    data_index = np.rint(labels.world_to_data(viewer.dims.point)).astype(int)
    assert data_index[0] == np.rint(labels.world_to_data(world)[0])
    assert (np.asarray(labels.data)[data_index[0]] == 2).any(), step


def test_hide_and_show_change_only_the_colour(reviewed):
    _viewer, _image, labels, widget, _volume, _label = reviewed
    before = np.array(labels.data, copy=True)
    widget.set_visible(1, False)
    assert labels.colormap.map(np.array([1]))[0][3] == 0.0
    assert labels.colormap.map(np.array([2]))[0][3] == 1.0
    widget.set_visible(1, True)
    assert labels.colormap.map(np.array([1]))[0][3] == 1.0
    np.testing.assert_array_equal(labels.data, before)


def test_fill_between_slices_and_undo(reviewed):
    viewer, _image, labels, widget, _volume, _label = reviewed
    data = np.asarray(labels.data)
    axis = widget._slice_axis(labels)
    assert axis == viewer.dims.not_displayed[0]
    # draw structure 4 on two slices 4 apart along the scrolled axis
    sl = [slice(None)] * 3
    drawn = np.zeros(data.shape, bool)
    for k in (2, 6):
        sl[axis] = k
        region = drawn[tuple(sl)]
        region[10:20, 10:20] = True
    labels.data_setitem(np.nonzero(drawn), 4)
    before = np.array(labels.data, copy=True)
    filled = widget.interpolate_selected(4)
    after = np.asarray(labels.data)
    for k in (3, 4, 5):
        sl[axis] = k
        assert (after[tuple(sl)] == 4).sum() == 100
    assert filled == 300
    assert any(r["label"] == 4 for r in widget.rows)
    widget.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_low_rows_are_dark_on_orange_and_row_click_centres_the_structure(reviewed, qtbot):
    from qtpy.QtCore import Qt

    viewer, _image, labels, widget, _volume, _label = reviewed
    item = widget.table.item(1, 6)
    assert item.text() == "LOW"
    fg, bg = item.foreground().color(), item.background().color()
    assert fg.lightness() < 60 and bg.lightness() > 150  # readable: dark text on a light orange
    viewer.window.add_dock_widget(widget, area="right")
    viewer.window._qt_window.show()
    qtbot.waitExposed(widget.table)
    qtbot.wait(300)  # docking fits the view once (deferred); the user clicks after that
    widget.table.scrollToItem(widget.table.item(1, 2))
    rect = widget.table.visualItemRect(widget.table.item(1, 2))
    qtbot.mouseClick(widget.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a real click
    qtbot.wait(50)
    assert labels.selected_label == 2
    world = np.asarray(labels.data_to_world(np.argwhere(np.asarray(labels.data) == 2).mean(axis=0)))
    displayed = list(viewer.dims.displayed)
    np.testing.assert_allclose(np.asarray(viewer.camera.center)[-2:], world[displayed], atol=3.0)


def test_remove_small_islands_and_smooth_each_undo_in_one_step(reviewed):
    _viewer, _image, labels, widget, volume, _label = reviewed
    spacing = np.abs(labels.scale)
    voxel_ml = float(np.prod(spacing)) / 1000
    data = np.asarray(labels.data)
    # two islands of liver (label 1) far from the main block: 1 voxel and 8 voxels
    island = np.zeros(data.shape, bool)
    island[0, 0, 0] = True
    island[-2:, -2:, -2:] = True
    labels.data_setitem(np.nonzero(island), 1)
    before = np.array(labels.data, copy=True)
    removed = widget.remove_islands(1, min_size_ml=20 * voxel_ml)
    assert removed == 9 and not (np.asarray(labels.data)[island] == 1).any()
    assert (np.asarray(labels.data) == 1).sum() == (before == 1).sum() - 9  # the main block is kept
    widget.undo()
    np.testing.assert_array_equal(labels.data, before)

    # a hole inside label 1 is filled by closing (in mm), only with background, and undone in one step
    main = np.argwhere(before == 1).mean(axis=0).astype(int)
    hole = tuple(main)
    labels.data_setitem(tuple(np.array([[i] for i in hole])), 0)
    with_hole = np.array(labels.data, copy=True)
    changed = widget.smooth(1, radius_mm=2 * float(spacing.max()), method="closing")
    assert changed >= 1 and np.asarray(labels.data)[hole] == 1
    assert ((np.asarray(labels.data) != with_hole) <= (with_hole == 0)).all()  # never takes other labels
    widget.undo()
    np.testing.assert_array_equal(labels.data, with_hole)
    # opening removes a thin spike
    spike = np.zeros(data.shape, bool)
    lo = np.argwhere(before == 1).min(axis=0)
    spike[lo[0] + 2, lo[1] - 6 : lo[1], lo[2] + 5] = True
    labels.data_setitem(np.nonzero(spike), 1)
    spiked = np.array(labels.data, copy=True)
    assert widget.smooth(1, radius_mm=2.0, method="opening") >= spike.sum()
    assert not (np.asarray(labels.data)[spike] == 1).any()
    widget.undo()
    np.testing.assert_array_equal(labels.data, spiked)


def test_preserve_labels_on_for_model_results_and_3d_toggle(make_napari_viewer, data_dir):
    viewer = make_napari_viewer()
    ct = data_dir / "dcmqi" / "ct-3slice"
    (image,) = viewer.open(str(ct), plugin=PLUGIN)
    volume = layer_info(image).volume
    label = np.zeros(volume.shape[1:], dtype=np.uint8)
    label[100:200, 100:200, :] = 1
    data, kwargs, _ = labels_layer_data(make_volume(label, np.asarray(volume.affine)), {1: "liver"},
                                        reference=volume, algorithm="some model")
    model = viewer.add_labels(data, **kwargs)
    hand = viewer.add_labels(np.zeros_like(data), name="hand")
    widget = ReviewWidget(viewer)
    assert model.preserve_labels and not hand.preserve_labels
    widget.layer_combo.setCurrentText(model.name)
    assert widget.preserve_check.isChecked()
    widget.preserve_check.setChecked(False)
    assert not model.preserve_labels
    widget.show_3d(True, label=1)
    assert viewer.dims.ndisplay == 3 and model.show_selected_label and model.selected_label == 1
    widget.show_3d(False)
    assert viewer.dims.ndisplay == 2 and not model.show_selected_label


def test_seg_button_disabled_with_the_reason_for_the_sample(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "totalsegmentator" / "example_ct_dicom"), plugin=PLUGIN)
    viewer.layers.selection.active = image
    viewer._new_labels()
    labels = viewer.layers[-1]
    labels.paint((10, 250, 250), 1)
    widget = ReviewWidget(viewer)
    widget.layer_combo.setCurrentText(labels.name)
    widget.refresh()
    assert not widget.save_seg_button.isEnabled()
    assert "StudyInstanceUID" in widget.save_seg_button.toolTip()
    assert widget.save_seg(str(tmp_path / "x.dcm")) == [] and "StudyInstanceUID" in widget.status.text()


def test_qc_column_gives_the_verdict_and_reasons(reviewed):
    """Issue 11: the Review table shows the QC verdict; a 'liver' of a few mL in the MSD crop is below range."""
    from napari_m2f_med._review_widget import COLUMNS

    _, _, _, widget, _, _ = reviewed
    qc_col, reasons_col = COLUMNS.index("QC"), COLUMNS.index("QC reasons")
    by_name = {widget.table.item(r, COLUMNS.index("name")).text(): r for r in range(widget.table.rowCount())}
    liver = by_name["liver"]
    assert widget.table.item(liver, qc_col).text() in ("check", "fail")
    assert "mL" in widget.table.item(liver, reasons_col).text()
    spleen_row = next(r for r in widget.rows if r["name"] == "spleen")
    assert any("low confidence" in x for x in spleen_row["qc_reasons"])
