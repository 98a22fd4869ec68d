"""Editing helpers of the Review widget, as pure array functions: remove small islands, smooth in mm.

They mirror 3D Slicer's Segment Editor effects *Islands* ("remove small islands") and *Smoothing*
("closing (fill holes)" / "opening (remove extrusions)", kernel size in mm), on one label of a label array.
Each returns the voxels to change and never touches other structures, so the widget applies it with one
``Labels.data_setitem`` call: one step in napari's undo history.

Connected components: ``scipy.ndimage.label`` with full (26-) connectivity, as Slicer's default. Morphology:
``scipy.ndimage.binary_closing`` / ``binary_opening`` with an ellipsoid whose semi-axes are the radius in
mm divided by the voxel spacing of each axis, so anisotropic CT (0.8 x 0.8 x 5 mm) is smoothed by the same
physical amount in every direction (the ellipsoid is at least one voxel in every axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["small_islands", "smoothing_change", "ellipsoid"]


def small_islands(
    data: np.ndarray, label: int, min_size_ml: float, spacing: Sequence[float]
) -> np.ndarray:
    """Voxels of ``label`` in connected components smaller than ``min_size_ml`` (to be set to background).

    The largest component is always kept, so the structure never disappears.

    Args:
        data: ``(Z, Y, X)`` (any 3-D order) integer label array.
        label: the structure's value.
        min_size_ml: components below this volume (mL = 1000 mm³) are islands.
        spacing: voxel size in mm along the three axes of ``data``.

    Returns:
        ``(Z, Y, X)`` bool mask of the voxels to clear.
    """
    mask = np.asarray(data) == int(label)
    if not mask.any():
        return np.zeros(mask.shape, bool)
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())[1:]
    voxel_ml = float(np.prod(np.abs(np.asarray(spacing, dtype=np.float64)))) / 1000.0
    small = sizes * voxel_ml < float(min_size_ml)
    small[int(np.argmax(sizes))] = False
    if not small.any():
        return np.zeros(mask.shape, bool)
    return np.concatenate([[False], small])[components]


def ellipsoid(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """A boolean ellipsoid structuring element of ``radius_mm`` on a grid of ``spacing`` (mm per axis).

    Returns:
        ``(2 r0 + 1, 2 r1 + 1, 2 r2 + 1)`` bool array with ``r_a = round(radius_mm / spacing[a])`` voxels
        (0 along axes whose spacing exceeds twice the radius; the finest axis gets at least 1).
    """
    spacing = np.abs(np.asarray(spacing, dtype=np.float64))
    radii = [int(round(radius_mm / s)) for s in spacing]
    if not any(radii):
        radii = [1 if s == spacing.min() else 0 for s in spacing]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    dist = sum((g * s / float(radius_mm)) ** 2 for g, s in zip(grids, spacing))
    return dist <= 1.0 + 1e-9


def smoothing_change(
    data: np.ndarray, label: int, radius_mm: float, spacing: Sequence[float], method: str = "closing"
) -> np.ndarray:
    """Voxels that a morphological closing or opening of ``label`` would change.

    * ``"closing"`` (fill holes and notches smaller than the kernel): returns background voxels to add;
      voxels of other structures are never taken.
    * ``"opening"`` (remove extrusions and thin bridges): returns voxels of ``label`` to clear.

    Args:
        data: 3-D integer label array.
        label: the structure's value.
        radius_mm: kernel radius in mm (Slicer's "kernel size" is the diameter).
        spacing: voxel size in mm along the axes of ``data``.
        method: ``"closing"`` or ``"opening"``.

    Returns:
        Bool mask of the voxels to set (closing: to ``label``; opening: to 0).

    Raises:
        ValueError: unknown ``method`` or a radius that is not positive.
    """
    if radius_mm <= 0:
        raise ValueError(f"the smoothing radius must be positive, got {radius_mm} mm")
    arr = np.asarray(data)
    mask = arr == int(label)
    if not mask.any():
        return np.zeros(mask.shape, bool)
    element = ellipsoid(radius_mm, spacing)
    pad = [(s // 2 + 1,) * 2 for s in element.shape]  # room for the kernel: no border effects
    padded = np.pad(mask, pad)
    inner = tuple(slice(p[0], p[0] + n) for p, n in zip(pad, mask.shape))
    if method == "closing":
        smoothed = ndimage.binary_closing(padded, structure=element)[inner]
        return smoothed & ~mask & (arr == 0)
    if method == "opening":
        smoothed = ndimage.binary_opening(padded, structure=element)[inner]
        return mask & ~smoothed
    raise ValueError(f"unknown smoothing method {method!r} (closing or opening)")
