"""Viewer manners: short layer names, no units notice, the view fits after docking, Series lines, SEG alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from napari_m2f_med._reader import series_label
from napari_m2f_med._review_widget import ReviewWidget
from napari_m2f_med._segment_widget import SegmentWidget
from napari_m2f_med._series_widget import SeriesWidget

PLUGIN = "m2f-med"


@pytest.fixture
def notices():
    """Messages of the napari notifications emitted during the test."""
    seen: list[str] = []

    def record(n):
        seen.append(str(n.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


def _settle(qtbot, viewer, ms=200):
    qtbot.wait(ms)
    viewer.window._qt_viewer.canvas._scene_canvas.update()  # draw: napari checks units on the next draw
    qtbot.wait(ms)


def test_dicom_folder_and_model_result_get_short_names(make_napari_viewer, qtbot, data_dir, threshold_bundle):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "totalsegmentator" / "example_ct_dicom"), plugin=PLUGIN)
    assert image.name == "CT Body 3.0"  # the SeriesDescription
    (ct3,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    assert ct3.name == "ct-3slice"  # no description: the folder name
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    widget.run(ct3)
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    assert widget.result_layer.name == "ct-3slice labels"
    assert widget.result_layer.preserve_labels  # model results: painting never overwrites a neighbour


def test_no_units_notice(make_napari_viewer, qtbot, data_dir, threshold_bundle, notices):
    """Every layer m2f-med makes is in mm; a layer added without units is given mm (one notice at most)."""
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    for widget in (SegmentWidget(viewer), ReviewWidget(viewer)):
        viewer.window.add_dock_widget(widget, area="right")
    segment = SegmentWidget(viewer)
    segment.bundle_edit.setText(str(threshold_bundle))
    segment.run(image)
    qtbot.waitUntil(lambda: not segment.running, timeout=180_000)
    viewer.open(str(data_dir / "dcmqi" / "seg_dicom" / "liver.dcm"), plugin=PLUGIN)
    viewer.layers.selection.active = image
    viewer._new_labels()
    viewer.open_sample("m2f-med", "example_ct")
    _settle(qtbot, viewer)
    assert not [m for m in notices if "units" in m.lower()], notices
    assert all(str(u) == "millimeter" for layer in viewer.layers for u in layer.units)

    points = viewer.add_points(np.array([[0.0, -150.0, 20.0]]), name="measure")  # napari default: pixel
    _settle(qtbot, viewer)
    assert str(points.units[0]) == "millimeter" and viewer.layers.extent.units is not None
    first = len([m for m in notices if "units" in m.lower()])
    assert first <= 1  # napari checks inside its own insert handler, before any plugin can act
    viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    _settle(qtbot, viewer)
    assert len([m for m in notices if "units" in m.lower()]) == first  # not persistent


def test_view_fits_the_image_again_after_widgets_dock(make_napari_viewer, qtbot, data_dir):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1200, 800)
    viewer.open(str(data_dir / "totalsegmentator" / "example_ct_dicom"), plugin=PLUGIN)
    _settle(qtbot, viewer)
    zoom_before = viewer.camera.zoom
    for widget in (SegmentWidget(viewer), ReviewWidget(viewer)):
        viewer.window.add_dock_widget(widget, area="right")
    _settle(qtbot, viewer, 400)
    zoom_docked = viewer.camera.zoom
    viewer.reset_view()
    assert zoom_docked < zoom_before  # the canvas got narrower and the view followed it
    assert zoom_docked == pytest.approx(viewer.camera.zoom, rel=1e-6)  # what a fresh fit gives


def test_series_lines_start_with_description_and_end_with_an_elided_uid(make_napari_viewer, data_dir):
    from m2f_med.io.dicom_index import index_dicom_tree

    folder = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001"
    series = next(s for s in index_dicom_tree(folder).series if s.modality == "MR")
    line = series_label(series)
    assert line.startswith("IBSI_1_STS_001_MR_T1_image · MR · 59 images · …")
    assert line.endswith(series.series_uid[-12:]) and series.series_uid not in line
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    widget = SeriesWidget(viewer)
    texts = [widget.series_combo.itemText(i) for i in range(widget.series_combo.count())]
    assert texts and all(" images · …" in t for t in texts)
    assert widget.sizeHint().width() < 500  # long lines no longer widen the window


def test_seg_without_its_series_says_how_to_open_it(make_napari_viewer, data_dir, tmp_path, notices):
    alone = tmp_path / "alone" / "sub"
    alone.mkdir(parents=True)
    shutil.copy(data_dir / "dcmqi" / "seg_dicom" / "liver.dcm", alone / "liver.dcm")
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(alone / "liver.dcm"), plugin=PLUGIN)
    assert labels._type_string == "labels" and np.asarray(labels.data).any()
    assert any("open the series first" in m and "liver.dcm" in m for m in notices), notices
