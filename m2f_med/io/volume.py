"""The one in-memory volume type of m2f-med: a MONAI ``MetaTensor`` of shape ``(C, X, Y, Z)``.

Axis and geometry conventions (see ``docs/ARCHITECTURE.md``):

* ``X`` runs along the DICOM row direction (column index ``i``), ``Y`` along the column direction (row
  index ``j``), ``Z`` along the slice normal, ordered by position. For NIfTI this is the stored order.
* ``affine`` maps voxel indices ``(i, j, k, 1)`` to world millimetres in **RAS** (MONAI's convention):
  ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``, where DICOM geometry is LPS (DICOM PS3.3 C.7.6.2.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = [
    "LPS_TO_RAS",
    "make_volume",
    "lps_to_ras_affine",
    "spacing_from_affine",
    "orientation_code",
    "add_problem",
    "MODALITY",
    "SOURCE_FORMAT",
    "SOURCE_PATHS",
    "SPACING",
    "PROBLEMS",
    "STUDY_UID",
    "SERIES_UID",
    "FOR_UID",
    "SOP_UIDS",
    "SOP_CLASS_UID",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# meta keys (DICOM attribute names where one exists)
MODALITY = "modality"
SOURCE_FORMAT = "source_format"
SOURCE_PATHS = "source_paths"
SPACING = "spacing_mm"
PROBLEMS = "problems"
STUDY_UID = "StudyInstanceUID"
SERIES_UID = "SeriesInstanceUID"
FOR_UID = "FrameOfReferenceUID"
SOP_UIDS = "SOPInstanceUIDs"
SOP_CLASS_UID = "SOPClassUID"


def lps_to_ras_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a 4×4 voxel→LPS-world affine (DICOM) to voxel→RAS-world (NIfTI/MONAI).

    Args:
        affine_lps: ``(4, 4)`` array; world units mm.

    Returns:
        ``(4, 4)`` float64 array, ``diag(-1, -1, 1, 1) @ affine_lps``. The same function converts back.
    """
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm along the three array axes: the norms of the affine's first three columns."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter orientation code of the array axes in RAS terms (nibabel's ``aff2axcodes``), e.g. ``"LPS"``.

    Each letter names the world direction an axis points *towards*: ``"RAS"`` means i increases towards
    the Right, j towards Anterior, k towards Superior (the NIfTI/nibabel convention).
    """
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def make_volume(array: np.ndarray | torch.Tensor, affine_ras: np.ndarray, **meta: Any) -> MetaTensor:
    """Build an m2f-med volume.

    Args:
        array: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` (a channel axis is added). Kept as given (no dtype change).
        affine_ras: ``(4, 4)`` voxel-index → RAS world (mm).
        **meta: extra metadata; see the key constants of this module. ``problems`` defaults to ``[]``.

    Returns:
        ``MetaTensor`` with ``affine``, ``original_affine``, ``spatial_shape``, ``space="RAS"``,
        ``spacing_mm`` and ``problems`` set, plus ``meta``.

    Raises:
        ValueError: if the array is not 3-D or 4-D or the affine is not 4×4 and invertible.
    """
    t = torch.as_tensor(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"a volume must be (C, X, Y, Z); got shape {tuple(t.shape)}")
    aff = np.asarray(affine_ras, dtype=np.float64)
    if aff.shape != (4, 4) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be an invertible 4x4 matrix; got {aff!r}")
    m: dict[str, Any] = {
        "original_affine": aff.copy(),
        "spatial_shape": np.asarray(t.shape[1:]),
        "space": "RAS",
        SPACING: spacing_from_affine(aff),
        PROBLEMS: [],
        MODALITY: "",
    }
    m.update(meta)
    m.setdefault("filename_or_obj", str((m.get(SOURCE_PATHS) or [""])[0]))
    return MetaTensor(t, affine=torch.as_tensor(aff), meta=m)


def add_problem(volume: MetaTensor, message: str) -> None:
    """Append a human-readable note to ``volume.meta["problems"]`` (created if missing)."""
    volume.meta.setdefault(PROBLEMS, []).append(message)


def problems(volume: MetaTensor) -> Sequence[str]:
    """The problems a reader found and handled, as a list of strings (empty if none)."""
    return list(volume.meta.get(PROBLEMS, []))
