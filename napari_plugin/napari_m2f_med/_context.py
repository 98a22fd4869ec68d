"""What is open in the current napari viewer: the image volumes a SEG, RTSTRUCT or Labels layer belongs to.

npe2 readers and writers receive paths and layer data only, not the viewer; a DICOM-SEG needs the source
series, so they look for it among the image layers the plugin opened (``napari.current_viewer()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_m2f_med._geometry import napari_affine_from_state
from napari_m2f_med._layers import LayerInfo, layer_info

__all__ = ["open_images", "image_on_same_grid", "image_under_layer"]

# world positions of two grids' voxels agreeing within this (mm) make them the same grid
_GRID_TOL_MM = 1e-4


def open_images(viewer: Any = None) -> list[LayerInfo]:
    """:class:`LayerInfo` of every m2f-med image layer in ``viewer`` (default: the current viewer).

    Returns:
        The infos (each with ``volume``), in layer order; empty without a viewer.
    """
    if viewer is None:
        try:
            import napari

            viewer = napari.current_viewer()
        except Exception:  # noqa: BLE001 - no Qt application or no viewer: nothing is open
            return []
    if viewer is None:
        return []
    infos = [layer_info(layer) for layer in viewer.layers]
    return [i for i in infos if i is not None and i.kind == "image" and i.volume is not None]


def image_on_same_grid(label: Any, viewer: Any = None) -> Any:
    """The open image volume whose grid is exactly that of ``label`` (same shape and affine), else ``None``.

    Args:
        label: ``MetaTensor`` ``(1, X, Y, Z)`` with an RAS affine.
        viewer: napari viewer (default: the current one).
    """
    affine = np.asarray(label.affine, dtype=np.float64)
    for info in open_images(viewer):
        vol = info.volume
        if tuple(vol.shape[1:]) == tuple(label.shape[1:]) and np.allclose(
            np.asarray(vol.affine, dtype=np.float64), affine, atol=_GRID_TOL_MM
        ):
            return vol
    return None


def image_under_layer(
    state: Mapping[str, Any], shape: tuple[int, ...], viewer: Any = None
) -> LayerInfo | None:
    """The open image layer a Labels layer sits on voxel for voxel (same data shape and world transform).

    Used for Labels layers napari made itself (the "new labels" button copies the image's transform).

    Args:
        state: the Labels layer state (scale, translate, affine, ...).
        shape: the Labels data shape.
        viewer: napari viewer (default: the current one).

    Returns:
        The image's :class:`LayerInfo`, or ``None``.
    """
    try:
        transform = napari_affine_from_state(state)
    except ValueError:
        return None
    for info in open_images(viewer):
        if tuple(info.geometry.display_shape) != tuple(shape):
            continue
        shown = napari_affine_from_state(info.geometry.layer_kwargs())
        if np.allclose(shown, transform, atol=_GRID_TOL_MM, rtol=0):
            return info
    return None
