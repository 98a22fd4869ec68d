"""Per-class clean-up of a predicted label map: largest connected component, small blobs, holes.

Connected components use full (26-) connectivity, as MONAI's ``KeepLargestConnectedComponent`` does by
default. Each class is processed inside its own bounding box (``scipy.ndimage.find_objects``), so the cost
follows the size of the structures, not of the volume. Removed voxels become background (0); hole filling
only claims background voxels, never another class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_objects

__all__ = ["postprocess_label", "parse_postprocessing"]

_FULL_3D = np.ones((3, 3, 3), dtype=bool)


def _class_set(value: bool | Iterable[int] | None, classes: Iterable[int]) -> set[int]:
    if value is True:
        return set(classes)
    if not value:
        return set()
    return {int(v) for v in value}


def _remove_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop 26-connected blobs of fewer than ``min_voxels`` voxels (scikit-image, any version)."""
    try:  # scikit-image >= 0.26 names the limit max_size (inclusive)
        return remove_small_objects(mask, max_size=min_voxels - 1, connectivity=3)
    except TypeError:
        return remove_small_objects(mask, min_size=min_voxels, connectivity=3)


def parse_postprocessing(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the bundle's ``postprocessing`` spec.

    Args:
        spec: ``{"keep_largest": true | [ids], "min_size_mm3": float | {"id": float}, "fill_holes": true | [ids]}``;
            every key optional.

    Returns:
        The spec with the three keys present (defaults: nothing done).

    Raises:
        ValueError: unknown keys or negative sizes.
    """
    s = dict(spec or {})
    out = {"keep_largest": s.pop("keep_largest", False), "min_size_mm3": s.pop("min_size_mm3", 0.0),
           "fill_holes": s.pop("fill_holes", False)}
    if s:
        raise ValueError(f"unknown postprocessing keys {sorted(s)}; use keep_largest, min_size_mm3, fill_holes")
    sizes = out["min_size_mm3"].values() if isinstance(out["min_size_mm3"], Mapping) else [out["min_size_mm3"]]
    if any(float(v) < 0 for v in sizes):
        raise ValueError(f"min_size_mm3 must be >= 0; got {out['min_size_mm3']}")
    return out


def postprocess_label(
    label: np.ndarray,
    spacing_mm: tuple[float, float, float] | None = None,
    *,
    keep_largest: bool | Iterable[int] = False,
    min_size_mm3: float | Mapping[Any, float] = 0.0,
    fill_holes: bool | Iterable[int] = False,
    voxel_volume_mm3: float | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Clean a label map class by class.

    Order per class: remove blobs smaller than ``min_size_mm3``, keep the largest component, fill holes.

    Args:
        label: ``(X, Y, Z)`` integer label map (0 = background); not modified.
        spacing_mm: voxel spacing (mm) used for the voxel volume when ``voxel_volume_mm3`` is not given.
        keep_largest: ``True`` for every class, or the class ids to reduce to their largest component.
        min_size_mm3: blobs below this volume (mm³) are removed; one number for all classes or ``{id: mm³}``.
        fill_holes: ``True`` for every class or the class ids whose enclosed holes are filled (3-D,
            ``scipy.ndimage.binary_fill_holes``).
        voxel_volume_mm3: volume of one voxel (``|det(affine[:3, :3])|``; exact for sheared grids).

    Returns:
        ``(cleaned label map (same dtype and shape), notes)``; notes say how many voxels each step changed.

    Raises:
        ValueError: ``label`` is not 3-D, or neither spacing nor voxel volume is given while sizes are set.

    See Also:
        MONAI ``KeepLargestConnectedComponent``, ``RemoveSmallObjects``, ``FillHoles`` (same operations on
        one-hot tensors); scikit-image ``remove_small_objects``.
    """
    if label.ndim != 3:
        raise ValueError(f"postprocess_label expects an (X, Y, Z) label map; got shape {label.shape}")
    out = np.array(label, copy=True)
    boxes = ndimage.find_objects(out.astype(np.int64, copy=False) if out.dtype == np.bool_ else out)
    present = [i + 1 for i, b in enumerate(boxes) if b is not None]
    largest = _class_set(keep_largest, present)
    fill = _class_set(fill_holes, present)
    if isinstance(min_size_mm3, Mapping):
        sizes = {int(k): float(v) for k, v in min_size_mm3.items()}
    else:
        sizes = {c: float(min_size_mm3) for c in present}
    if any(v > 0 for v in sizes.values()) and voxel_volume_mm3 is None:
        if spacing_mm is None:
            raise ValueError("min_size_mm3 needs spacing_mm or voxel_volume_mm3")
        voxel_volume_mm3 = float(np.prod(spacing_mm))
    notes: list[str] = []
    for c in present:
        box = boxes[c - 1]
        sub = out[box]
        mask = sub == c
        before = int(mask.sum())
        kept = mask
        min_vox = math.ceil(sizes.get(c, 0.0) / voxel_volume_mm3) if sizes.get(c, 0.0) > 0 else 0
        if min_vox > 1:
            kept = _remove_small(kept, min_vox)
        if c in largest and kept.any():
            comps, n = ndimage.label(kept, structure=_FULL_3D)
            if n > 1:
                biggest = int(np.argmax(np.bincount(comps.ravel())[1:])) + 1
                kept = comps == biggest
        removed = before - int(kept.sum())
        sub[mask & ~kept] = 0
        if removed:
            notes.append(f"class {c}: removed {removed} voxels (small blobs / not the largest component)")
        if c in fill and kept.any():
            filled = ndimage.binary_fill_holes(kept) & (sub == 0)
            added = int(filled.sum())
            if added:
                sub[filled] = c
                notes.append(f"class {c}: filled {added} hole voxels")
    return out, notes
