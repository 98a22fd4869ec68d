"""Fill the slices between the slices a user drew a structure on (shape-based interpolation).

Raya & Udupa, "Shape-based interpolation of multidimensional objects", IEEE TMI 9(1), 1990: each drawn
slice is turned into a signed distance map (negative inside, in mm with the in-plane spacing), the maps of
the two drawn slices around a gap are blended linearly by slice position, and the blended map's negative
part is the interpolated shape. Distances are ``scipy.ndimage.distance_transform_edt``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["signed_distance", "interpolate_between_slices"]


def signed_distance(mask: np.ndarray, sampling: Sequence[float] | None = None) -> np.ndarray:
    """Signed Euclidean distance to the mask boundary: negative inside, positive outside (mm).

    Args:
        mask: ``(H, W)`` boolean slice with at least one pixel set.
        sampling: pixel size ``(row, col)`` in mm; 1 if ``None``.

    Returns:
        ``(H, W)`` float64 map; pixels of ``mask`` are ``<= -min(sampling)``, others ``>= +min(sampling)``.
    """
    mask = np.asarray(mask, dtype=bool)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    return outside - inside


def interpolate_between_slices(
    labels: np.ndarray,
    label: int,
    axis: int = 0,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
) -> np.ndarray:
    """Voxels to set to ``label`` so every gap between two drawn slices of the structure is filled.

    A slice along ``axis`` is "drawn" when it holds at least one voxel of ``label``. For each pair of
    consecutive drawn slices with empty slices between them, the empty slices get the shape-based
    interpolation of the two. Slices outside the first and last drawn slice are left alone. The input is
    not modified.

    Args:
        labels: ``(A0, A1, A2)`` integer label array (napari layer data).
        label: the structure's label value (> 0).
        axis: the slicing axis (the napari axis the user scrolls through, usually 0).
        spacing: voxel size in mm along the three axes (only the two in-plane values are used); 1 if ``None``.
        overwrite: also replace voxels of other structures; by default only background (0) is filled.

    Returns:
        Boolean ``(A0, A1, A2)`` array of the voxels to set (empty when there is no gap).

    Raises:
        ValueError: ``label`` is not positive or ``labels`` is not 3-D.
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3-D; got shape {arr.shape}")
    if label <= 0:
        raise ValueError(f"label must be a positive structure id; got {label}")
    moved = np.moveaxis(arr, axis, 0)
    sampling = None
    if spacing is not None:
        sampling = [float(s) for i, s in enumerate(spacing) if i != axis % 3]
    fill = np.zeros(moved.shape, dtype=bool)
    drawn = np.flatnonzero((moved == label).reshape(moved.shape[0], -1).any(axis=1))
    for lower, upper in zip(drawn[:-1], drawn[1:]):
        if upper - lower < 2:
            continue
        d_lower = signed_distance(moved[lower] == label, sampling)
        d_upper = signed_distance(moved[upper] == label, sampling)
        for k in range(lower + 1, upper):
            t = (k - lower) / (upper - lower)
            shape = (1 - t) * d_lower + t * d_upper < 0
            free = np.ones_like(shape) if overwrite else moved[k] == 0
            fill[k] = shape & free & (moved[k] != label)
    return np.moveaxis(fill, 0, axis)
