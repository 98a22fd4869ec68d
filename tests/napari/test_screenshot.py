"""Rendering: the canvas shows the CT and the fixed organ colours (under Xvfb; offscreen Qt has no GL)."""

from __future__ import annotations

import json

import numpy as np
from napari_m2f_med._colors import ORGAN_COLORS, label_colormap
from napari_m2f_med._layers import label_features
from napari_m2f_med._review_widget import ReviewWidget

PLUGIN = "m2f-med"


def _near(rgb_image, color, tol=4):
    return np.all(np.abs(rgb_image[..., :3].astype(int) - np.array(color)) <= tol, axis=-1)


def test_canvas_shows_ct_and_label_colours(make_napari_viewer, data_dir, tmp_path):
    ts = data_dir / "totalsegmentator"
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 800)
    viewer.open_sample("m2f-med", "example_ct")
    (labels,) = viewer.open(str(ts / "example_seg_fast_force_split.nii.gz"), plugin=PLUGIN)
    names = {
        int(k): v
        for k, v in json.loads((ts / "class_map_total_and_total_mr.json").read_text())["total"].items()
    }
    labels.features = label_features(names)
    labels.colormap = label_colormap(names)
    labels.opacity = 1.0
    widget = ReviewWidget(viewer)
    widget.layer_combo.setCurrentText(labels.name)
    liver = next(k for k, v in names.items() if v == "liver")
    widget.jump_to(liver)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    from skimage.io import imsave

    imsave(tmp_path / "canvas.png", shot, check_contrast=False)
    grey = shot[..., :3].astype(int)
    assert grey.std() > 20  # not blank
    assert len(np.unique(grey.reshape(-1, 3), axis=0)) > 50  # CT texture, not a flat fill
    assert _near(shot, ORGAN_COLORS["liver"]).sum() > 500
    assert _near(shot, ORGAN_COLORS["spleen"]).sum() > 50
    # the liver lies on the patient's right, i.e. on the LEFT of the screen (radiological convention)
    cols = np.nonzero(_near(shot, ORGAN_COLORS["liver"]))[1]
    assert cols.mean() < shot.shape[1] / 2
