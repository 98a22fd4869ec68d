"""Segment widget: bundle inference in a worker thread, progress, Cancel, names and colours on the result."""

from __future__ import annotations

import numpy as np
import pytest
from napari_m2f_med._colors import ORGAN_COLORS
from napari_m2f_med._layers import layer_info
from napari_m2f_med._segment_widget import SegmentWidget

PLUGIN = "m2f-med"


def _run(qtbot, widget, layer):
    worker = widget.run(layer)
    # wait on state set by the GUI thread: a finished signal may fire before a waitSignal connects
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    return worker


def test_threshold_model_result_is_a_named_coloured_labels_layer_on_the_image(
    make_napari_viewer, qtbot, data_dir, threshold_bundle
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    progress = []
    widget._signals.progress.connect(lambda done, total: progress.append((done, total)))
    _run(qtbot, widget, image)
    assert widget.last_error is None, widget.last_error
    labels = widget.result_layer
    assert labels is not None and labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    # the model is a threshold on HU, so the expected mask is known independently of the plugin
    hu = np.asarray(image.data)
    x = np.clip((hu + 160) / 400, 0, 1)
    expected = np.argmax(np.stack([np.full_like(x, 0.5), x, 2 * x - 0.9]), axis=0)
    agree = np.mean(np.asarray(labels.data) == expected)
    assert agree > 0.999, agree
    names = dict(zip(labels.features["index"], labels.features["name"]))
    assert names[1] == "liver" and names[2] == "spleen"
    liver_rgba = labels.colormap.map(np.array([1]))[0]
    np.testing.assert_allclose(liver_rgba[:3], np.array(ORGAN_COLORS["liver"]) / 255, atol=1e-6)
    info = layer_info(labels)
    assert info.reference is layer_info(image).volume
    assert 0.3 < info.confidence[1] <= 1.0
    assert progress[-1][0] == progress[-1][1] == 3  # every slice reported, in order
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_cancel_stops_without_adding_a_layer(make_napari_viewer, qtbot, data_dir, threshold_bundle):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    widget.run(image)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.result_layer is None
    assert widget.status.text() == "cancelled"
    assert len(viewer.layers) == 1


def test_tiny_mask2former_bundle_runs_and_reports_confidence(
    make_napari_viewer, qtbot, data_dir, mask2former_bundle
):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "23x38x3" / "image"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(mask2former_bundle))
    _run(qtbot, widget, image)
    assert widget.last_error is None, widget.last_error
    labels = widget.result_layer
    assert labels.data.shape == image.data.shape
    assert widget.context_label.text() == "1"
    confidence = layer_info(labels).confidence
    present = {int(v) for v in np.unique(labels.data)} - {0}
    assert present and present <= set(confidence)
    assert all(0.0 < c <= 1.0 for c in confidence.values())


def test_bad_bundle_is_reported_not_raised(make_napari_viewer, qtbot, data_dir, tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(tmp_path))
    _run(qtbot, widget, image)
    assert widget.result_layer is None
    assert str(tmp_path) in widget.status.text()
    with pytest.raises(Exception, match="not a bundle"):
        raise widget.last_error


def test_cancel_mid_run_stops_at_the_next_window_batch(make_napari_viewer, data_dir, threshold_bundle):
    from napari_m2f_med._reader import read_path

    from m2f_med.inference.bundle_model import load_bundle
    from m2f_med.inference.volume import predict_volume

    volume = layer_info(read_path(str(data_dir / "dcmqi" / "ct-3slice"))[0][1]).volume
    model = load_bundle(threshold_bundle)
    widget = SegmentWidget(make_napari_viewer())
    reports = []
    widget._signals.progress.connect(lambda done, total: reports.append((done, total)))

    def press_cancel_after_first_slice(done, total):
        if done >= 1:
            widget.cancel()

    widget._signals.progress.connect(press_cancel_after_first_slice)
    result = widget._predict(volume, str(threshold_bundle), "", "cpu", {"slab_size": 1, "sw_batch_size": 1})
    assert result is None  # cancelled: nothing to add
    assert reports[0] == (0, 3) and reports[-1] == (1, 3)  # stopped after the first slice of three
    # the cached model is untouched: a plain run still works
    mask, _ = predict_volume(volume, model)
    assert mask.shape == volume.shape


def test_plain_napari_image_layer_is_segmented_on_its_own_grid(make_napari_viewer, qtbot, threshold_bundle):
    viewer = make_napari_viewer()
    hu = np.full((4, 30, 40), -1000.0, dtype=np.float32)
    hu[:, 10:20, 10:30] = 60.0  # soft tissue -> "liver" for the threshold model
    image = viewer.add_image(hu, scale=(5.0, 0.8, 0.8), translate=(100.0, -20.0, 30.0))
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    _run(qtbot, widget, image)
    assert widget.last_error is None, widget.last_error
    labels = widget.result_layer
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    np.testing.assert_array_equal(np.asarray(labels.data) == 1, hu > 0)
