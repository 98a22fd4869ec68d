"""Map m2f-med volumes to napari layers and back, keeping world coordinates in true millimetres.

Display convention (radiological, the one every PACS uses for axial images):

* napari **world** coordinates are the DICOM patient coordinates (LPS, mm; DICOM PS3.3 C.7.6.2.1.1) in
  the axis order napari expects, ``(z, y, x)``: world axis 0 increases towards the patient's head
  (Superior), axis 1 towards the back (Posterior), axis 2 towards the patient's Left. napari draws the
  last two axes as rows (downwards) and columns (rightwards), so an axial slice shows anterior at the
  top and the patient's left on the right of the screen, exactly as on a PACS. The RAS coordinates of the
  library are ``(-x, -y, z)``.
* The layer **data** is the source array ``(X, Y, Z)`` (``m2f_med.io.volume`` convention) reoriented
  with flips and axis swaps only (nibabel ``io_orientation``) so that its axes point, as closely as the
  acquisition allows, towards L, P and S, then transposed to ``(Z, Y, X)``. Both steps are numpy views:
  nothing is resampled and painting writes voxel for voxel into the source grid.
* The layer **transform**: ``scale`` is always the voxel spacing in mm of the displayed axes. For an
  axis-aligned acquisition (any flips or axis order, e.g. a RAS NIfTI or a sagittal MR), ``translate`` is
  the world position of voxel ``(0, 0, 0)`` and ``affine`` is the identity. For an oblique or gantry-tilted
  grid the remaining direction cosines and the origin go into ``affine`` (``translate`` is then zero).

:class:`DisplayGeometry` holds the flips and swaps, so a Labels layer is turned back into the exact source
grid and affine when it is saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nibabel.orientations as nio
import numpy as np

from m2f_med.io.volume import LPS_TO_RAS

__all__ = [
    "AXIS_LABELS",
    "UNITS",
    "DisplayGeometry",
    "display_geometry",
    "geometry_from_layer_state",
    "napari_affine_from_state",
]

AXIS_LABELS = ("z", "y", "x")
"""napari world axis names: DICOM patient (LPS) coordinates, head / back / patient-left positive."""

UNITS = ("mm", "mm", "mm")

# Reverses the three spatial axes of a homogeneous 4x4 matrix: (x, y, z) <-> (z, y, x). Its own inverse.
_REVERSE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
# Orientation the displayed data is brought to before transposing: i->L, j->P, k->S (DICOM axial order).
_DISPLAY_ORNT = nio.axcodes2ornt(("L", "P", "S"))
# Direction cosines closer to the identity than this are treated as axis-aligned (float32 round-off).
_ALIGNED_TOL = 1e-6


@dataclass(frozen=True)
class DisplayGeometry:
    """How one ``(X, Y, Z)`` source grid is shown in napari, and how to undo it.

    Attributes:
        source_shape: spatial shape ``(X, Y, Z)`` of the source volume.
        source_affine: ``(4, 4)`` voxel → RAS (mm) affine of the source volume, as loaded.
        to_display_ornt: ``(3, 2)`` nibabel orientation transform from the source axes to the L/P/S-ordered
            axes (before the final transpose to ``(Z, Y, X)``).
        napari_affine: ``(4, 4)`` map from napari data indices ``(a0, a1, a2)`` to napari world
            ``(z, y, x)`` LPS mm.
    """

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    to_display_ornt: np.ndarray
    napari_affine: np.ndarray

    @property
    def display_shape(self) -> tuple[int, int, int]:
        """Shape of the napari data array ``(Z', Y', X')`` (the source shape permuted)."""
        perm = self.to_display_ornt[:, 0].astype(int)
        reoriented = [0, 0, 0]
        for src_axis, dst_axis in enumerate(perm):
            reoriented[dst_axis] = self.source_shape[src_axis]
        return tuple(reversed(reoriented))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing (mm) along the napari data axes, shape ``(3,)``."""
        return np.linalg.norm(self.napari_affine[:3, :3], axis=0)

    @property
    def axis_aligned(self) -> bool:
        """True when the displayed axes are parallel to the patient axes (no oblique or tilt residue)."""
        direction = self.napari_affine[:3, :3] / self.spacing
        return bool(np.allclose(direction, np.eye(3), atol=_ALIGNED_TOL))

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """View a source array ``(X, Y, Z)`` as napari data ``(Z', Y', X')`` (flips and swaps, no copy).

        Args:
            array: ``(X, Y, Z)`` numpy array on the source grid (a CPU torch tensor is viewed as numpy).

        Returns:
            A numpy view; writing into it writes into ``array``.

        Raises:
            ValueError: if the shape is not ``source_shape``.
        """
        arr = np.asarray(array)
        if tuple(arr.shape) != tuple(self.source_shape):
            raise ValueError(f"expected a source array of shape {self.source_shape}, got {arr.shape}")
        return nio.apply_orientation(arr, self.to_display_ornt).transpose(2, 1, 0)

    def from_display(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`to_display`: napari data ``(Z', Y', X')`` back to the source grid ``(X, Y, Z)``.

        Args:
            array: napari layer data of shape ``display_shape``.

        Returns:
            A numpy view of ``array`` in source voxel order.

        Raises:
            ValueError: if the shape is not ``display_shape``.
        """
        arr = np.asarray(array)
        if tuple(arr.shape) != tuple(self.display_shape):
            raise ValueError(f"expected napari data of shape {self.display_shape}, got {arr.shape}")
        return nio.apply_orientation(arr.transpose(2, 1, 0), _invert_ornt(self.to_display_ornt))

    def layer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``napari.layers.Image`` / ``Labels`` placing the data in world mm.

        Returns:
            ``{"scale", "translate", "affine", "axis_labels", "units"}``; ``affine`` is ``None`` for
            axis-aligned grids (napari's identity).
        """
        spacing = self.spacing
        origin = self.napari_affine[:3, 3].copy()
        kwargs: dict[str, Any] = {"scale": spacing, "axis_labels": AXIS_LABELS, "units": UNITS}
        if self.axis_aligned:
            kwargs.update(translate=origin, affine=None)
        else:
            residual = np.eye(4)
            residual[:3, :3] = self.napari_affine[:3, :3] / spacing
            residual[:3, 3] = origin
            kwargs.update(translate=np.zeros(3), affine=residual)
        return kwargs

    def world_to_source_index(self, world_zyx: Sequence[float]) -> np.ndarray:
        """Source voxel index ``(i, j, k)`` (float) of a napari world point ``(z, y, x)`` LPS mm."""
        lps = np.r_[np.asarray(world_zyx, dtype=np.float64)[::-1], 1.0]
        return (np.linalg.inv(self.source_affine) @ (LPS_TO_RAS @ lps))[:3]


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform: source axis ``a`` went to ``b`` with a flip, so back."""
    inverse = np.empty_like(ornt)
    for src_axis, (dst_axis, flip) in enumerate(ornt):
        inverse[int(dst_axis)] = (src_axis, flip)
    return inverse


def display_geometry(affine_ras: np.ndarray, spatial_shape: Sequence[int]) -> DisplayGeometry:
    """Build the napari display geometry of a source grid.

    Args:
        affine_ras: ``(4, 4)`` voxel ``(i, j, k)`` → RAS (mm) affine (the m2f-med volume contract).
        spatial_shape: ``(X, Y, Z)`` voxel counts.

    Returns:
        The :class:`DisplayGeometry`; see the module docstring for the convention.

    Raises:
        ValueError: if the affine is not an invertible 4×4 matrix or the shape is not 3-D.

    See Also:
        nibabel ``io_orientation`` / ``ornt_transform`` / ``inv_ornt_aff`` (the flips and swaps).
    """
    aff = np.asarray(affine_ras, dtype=np.float64)
    shape = tuple(int(s) for s in spatial_shape)
    if aff.shape != (4, 4) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be an invertible 4x4 matrix; got {aff!r}")
    if len(shape) != 3:
        raise ValueError(f"spatial shape must be (X, Y, Z); got {shape}")
    xform = nio.ornt_transform(nio.io_orientation(aff), _DISPLAY_ORNT)
    reoriented_ras = aff @ nio.inv_ornt_aff(xform, shape)
    napari_affine = _REVERSE @ (LPS_TO_RAS @ reoriented_ras) @ _REVERSE
    return DisplayGeometry(shape, aff.copy(), xform, napari_affine)


def napari_affine_from_state(state: Mapping[str, Any]) -> np.ndarray:
    """The full ``(4, 4)`` data → world matrix of a layer from its state (``scale``, ``translate``, ...).

    Args:
        state: a napari layer's ``as_layer_data_tuple()[1]`` dict or the ``meta`` an npe2 writer receives; the keys
            ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` are used when present.

    Returns:
        ``affine @ (translate ∘ rotate ∘ shear ∘ scale)`` as napari composes them, for 3-D layers.

    Raises:
        ValueError: for layers that are not 3-D.
    """
    from napari.utils.transforms import Affine

    scale = np.asarray(state.get("scale", np.ones(3)), dtype=np.float64)
    if scale.shape != (3,):
        raise ValueError(f"only 3-D layers map to a volume; this layer has {scale.shape[0]} dimensions")
    physical = Affine(
        scale=scale,
        translate=np.asarray(state.get("translate", np.zeros(3)), dtype=np.float64),
        rotate=state.get("rotate"),
        shear=state.get("shear"),
    )
    outer = state.get("affine")
    outer_matrix = np.eye(4) if outer is None else np.asarray(getattr(outer, "affine_matrix", outer))
    return outer_matrix @ physical.affine_matrix


def geometry_from_layer_state(state: Mapping[str, Any], display_shape: Sequence[int]) -> DisplayGeometry:
    """Recover a source grid for a layer that m2f-med did not create (e.g. napari's "new labels" button).

    The layer's data ``(Z, Y, X)`` is taken as the source grid transposed, and its world transform is read
    with the convention of this module (world = LPS ``(z, y, x)`` mm).

    Args:
        state: layer state with ``scale`` / ``translate`` / ``rotate`` / ``shear`` / ``affine``.
        display_shape: shape of the layer data ``(Z, Y, X)``.

    Returns:
        A :class:`DisplayGeometry` whose ``source_affine`` (RAS) reproduces the layer's world placement.

    Raises:
        ValueError: for layers that are not 3-D or have a singular transform.
    """
    m = napari_affine_from_state(state)
    source_ras = LPS_TO_RAS @ (_REVERSE @ m @ _REVERSE)
    source_shape = tuple(int(s) for s in reversed(tuple(display_shape)))
    if len(source_shape) != 3:
        raise ValueError(f"only 3-D layers map to a volume; got data of shape {tuple(display_shape)}")
    if abs(np.linalg.det(source_ras[:3, :3])) < 1e-12:
        raise ValueError("the layer's scale/affine is singular; cannot place it in patient space")
    # keep the layer's data order as the source order, whatever its orientation
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    return DisplayGeometry(source_shape, source_ras, identity, m)
