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
