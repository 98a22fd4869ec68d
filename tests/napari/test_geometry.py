"""Display geometry: napari world coordinates are true LPS mm, and saving inverts the display exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from napari_m2f_med._geometry import display_geometry, geometry_from_layer_state, napari_affine_from_state
from scipy.spatial.transform import Rotation

from m2f_med.io.volume import LPS_TO_RAS

AXIS_PERMS = list(itertools.permutations(range(3)))


def _affine(perm, flips, spacing, origin, rotvec):
    """A voxel -> RAS affine whose axes point along a permuted/flipped, optionally rotated, RAS basis."""
    basis = np.zeros((3, 3))
    for axis, (world_axis, flip) in enumerate(zip(perm, flips)):
        basis[world_axis, axis] = flip * spacing[axis]
    aff = np.eye(4)
    aff[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix() @ basis
    aff[:3, 3] = origin
    return aff


def _world_of_display_index(kwargs, index):
    m = napari_affine_from_state(kwargs)
    return (m @ np.r_[index, 1.0])[:3]


grids = st.fixed_dictionaries(
    {
        "perm": st.sampled_from(AXIS_PERMS),
        "flips": st.tuples(*[st.sampled_from([-1, 1])] * 3),
        "spacing": st.tuples(*[st.floats(0.3, 6.0)] * 3),
        "origin": st.tuples(*[st.floats(-400, 400)] * 3),
        "rotvec": st.one_of(st.just((0.0, 0.0, 0.0)), st.tuples(*[st.floats(-0.3, 0.3)] * 3)),
        "shape": st.tuples(*[st.integers(2, 6)] * 3),
    }
)


@settings(max_examples=60, deadline=None)
@given(grids, st.data())
def test_world_coordinates_are_source_lps_mm(g, data):
    aff = _affine(g["perm"], g["flips"], g["spacing"], g["origin"], g["rotvec"])
    geom = display_geometry(aff, g["shape"])
    source = np.arange(np.prod(g["shape"])).reshape(g["shape"])
    shown = geom.to_display(source)
    assert shown.shape == geom.display_shape
    assert np.shares_memory(shown, source)
    back = geom.from_display(shown)
    np.testing.assert_array_equal(back, source)

    ijk = tuple(data.draw(st.integers(0, n - 1)) for n in g["shape"])
    display_index = np.argwhere(shown == source[ijk])[0]
    world_zyx = _world_of_display_index(geom.layer_kwargs(), display_index)
    ras = (aff @ np.r_[ijk, 1.0])[:3]
    lps = LPS_TO_RAS[:3, :3] @ ras
    # near-aligned grids (direction within 1e-6 of the axes) are shown axis-aligned: sub-micrometre error
    np.testing.assert_allclose(world_zyx, lps[::-1], atol=1e-4)
    np.testing.assert_allclose(geom.world_to_source_index(world_zyx), ijk, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(grids)
def test_axis_aligned_grids_use_positive_scale_and_no_affine(g):
    g = dict(g, rotvec=(0.0, 0.0, 0.0))
    aff = _affine(g["perm"], g["flips"], g["spacing"], g["origin"], g["rotvec"])
    kwargs = display_geometry(aff, g["shape"]).layer_kwargs()
    assert kwargs["affine"] is None
    assert np.all(kwargs["scale"] > 0)
    # napari axis 0 = the source axis along S-I, whichever it was in the file
    si_axis = g["perm"].index(2)
    assert kwargs["scale"][0] == pytest.approx(g["spacing"][si_axis])


def test_radiological_convention_for_a_ras_nifti():
    # NIfTI stored RAS: i towards Right, j towards Anterior, k towards Superior
    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    geom = display_geometry(aff, (4, 5, 6))
    m = napari_affine_from_state(geom.layer_kwargs())
    # screen right (napari axis 2, columns) must go towards the patient's Left (+x LPS)
    assert m[2, 2] > 0
    # screen down (napari axis 1, rows) must go towards Posterior (+y LPS): anterior on top
    assert m[1, 1] > 0
    # slider axis towards the head
    assert m[0, 0] > 0
    # the first displayed column is the source's last i (the patient's rightmost voxel)
    source = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    assert geom.to_display(source)[0, 0, 0] == source[3, 4, 0]


def test_oblique_grid_puts_direction_into_affine():
    aff = _affine((0, 1, 2), (-1, -1, 1), (0.7, 0.7, 2.5), (10.0, -20.0, 30.0), (0.2, 0.0, 0.0))
    kwargs = display_geometry(aff, (3, 4, 5)).layer_kwargs()
    assert kwargs["affine"] is not None
    np.testing.assert_allclose(kwargs["translate"], 0.0)
    np.testing.assert_allclose(sorted(kwargs["scale"]), sorted([0.7, 0.7, 2.5]))


def test_layer_without_metadata_round_trips_through_its_own_transform():
    aff = _affine((1, 0, 2), (1, -1, 1), (0.9, 1.1, 4.0), (5.0, 6.0, -7.0), (0.0, 0.0, 0.0))
    geom = display_geometry(aff, (3, 4, 5))
    state = geom.layer_kwargs()
    recovered = geometry_from_layer_state(state, geom.display_shape)
    shown = geom.to_display(np.arange(60).reshape(3, 4, 5))
    src = recovered.from_display(shown)
    # same world position for every voxel, whatever the voxel order chosen
    assert src.shape == (4, 3, 5)
    for ijk in [(0, 0, 0), (3, 2, 4), (1, 2, 3)]:
        world_new = recovered.source_affine @ np.r_[ijk, 1.0]
        orig_ijk = np.argwhere(np.arange(60).reshape(3, 4, 5) == src[ijk])[0]
        np.testing.assert_allclose(world_new, aff @ np.r_[orig_ijk, 1.0], atol=1e-9)


def test_bad_affine_is_rejected():
    with pytest.raises(ValueError, match="invertible"):
        display_geometry(np.zeros((4, 4)), (2, 2, 2))
