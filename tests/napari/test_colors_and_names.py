"""Fixed colour table and the names carried in a Labels layer's features."""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari_m2f_med._colors import ORGAN_COLORS, label_color, label_colormap
from napari_m2f_med._layers import label_features
from napari_m2f_med._writer import names_from_features


def test_same_organ_same_colour_whatever_the_id_or_spelling():
    liver = np.array(ORGAN_COLORS["liver"]) / 255
    np.testing.assert_allclose(label_color(5, "liver")[:3], liver)
    np.testing.assert_allclose(label_color(1, "Liver")[:3], liver)
    np.testing.assert_allclose(label_color(2, "kidney_left")[:3], label_color(3, "Kidney-Right")[:3])
    np.testing.assert_allclose(label_color(30, "vertebrae_L2")[:3], np.array(ORGAN_COLORS["vertebrae"]) / 255)
    assert label_color(0, "liver")[3] == 0.0  # background transparent
    # unknown names: fixed by id, so a hand-painted value keeps its colour across sessions
    np.testing.assert_allclose(label_color(7, "my_structure"), label_color(7))
    assert not np.allclose(label_color(7), label_color(8))


def test_colormap_maps_named_and_unnamed_ids():
    cmap = label_colormap({1: "spleen", 2: "aorta"})
    rgba = cmap.map(np.array([0, 1, 2, 9, 1000]))
    assert rgba[0][3] == 0
    np.testing.assert_allclose(rgba[1][:3], np.array(ORGAN_COLORS["spleen"]) / 255, atol=1e-6)
    np.testing.assert_allclose(rgba[2][:3], np.array(ORGAN_COLORS["aorta"]) / 255, atol=1e-6)
    assert rgba[3][3] == 1 and rgba[4][3] == 1  # painted values beyond the table stay visible


def test_names_round_trip_through_features_as_dict_or_dataframe():
    names = {1: "liver", 4: "GTV-1"}
    features = label_features(names, {1: 0.8})
    assert features["index"] == [0, 1, 4]
    assert np.isnan(features["confidence"][2])
    assert names_from_features(features) == names
    assert names_from_features(pd.DataFrame(features)) == names
    assert names_from_features(None) == {}
    assert names_from_features(pd.DataFrame({"other": [1]})) == {}
