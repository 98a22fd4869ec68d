"""Shape-based interpolation between drawn slices."""

from __future__ import annotations

import numpy as np
import pytest
from napari_m2f_med._interpolate import interpolate_between_slices


def _disc(shape, center, radius, spacing=(1.0, 1.0)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) * spacing[0]) ** 2 + ((xx - center[1]) * spacing[1]) ** 2 <= radius**2


def test_radius_grows_linearly_between_two_discs():
    labels = np.zeros((11, 64, 64), dtype=np.uint8)
    labels[0][_disc((64, 64), (32, 32), 6)] = 3
    labels[10][_disc((64, 64), (32, 32), 16)] = 3
    before = labels.copy()
    fill = interpolate_between_slices(labels, 3)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert not fill[0].any() and not fill[10].any()
    for k in range(1, 10):
        area = fill[k].sum()
        radius = 6 + (16 - 6) * k / 10
        assert area == pytest.approx(np.pi * radius**2, rel=0.12), k
    areas = [fill[k].sum() for k in range(1, 10)]
    assert areas == sorted(areas)


def test_identical_slices_fill_with_the_same_shape_and_spare_other_labels():
    labels = np.zeros((5, 20, 20), dtype=np.int32)
    square = np.zeros((20, 20), bool)
    square[4:12, 6:15] = True
    labels[0][square] = 1
    labels[4][square] = 1
    labels[2, 5, 7] = 2  # another structure inside the gap
    fill = interpolate_between_slices(labels, 1)
    np.testing.assert_array_equal(fill[1], square)
    expected_mid = square.copy()
    expected_mid[5, 7] = False
    np.testing.assert_array_equal(fill[2], expected_mid)
    assert interpolate_between_slices(labels, 1, overwrite=True)[2, 5, 7]


def test_other_axis_and_anisotropic_spacing():
    labels = np.zeros((20, 7, 20), dtype=np.uint8)
    labels[:, 0][_disc((20, 20), (10, 10), 4, spacing=(2.0, 0.5))] = 1
    labels[:, 6][_disc((20, 20), (10, 10), 4, spacing=(2.0, 0.5))] = 1
    fill = interpolate_between_slices(labels, 1, axis=1, spacing=(2.0, 3.0, 0.5))
    np.testing.assert_array_equal(fill[:, 3], labels[:, 0] == 1)


def test_no_gap_means_nothing_to_fill_and_bad_label_raises():
    labels = np.zeros((3, 4, 4), dtype=np.uint8)
    labels[1, 1, 1] = 1
    assert not interpolate_between_slices(labels, 1).any()
    with pytest.raises(ValueError):
        interpolate_between_slices(labels, 0)
