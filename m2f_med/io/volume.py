"""The one in-memory volume type of m2f-med: a MONAI ``MetaTensor`` of shape ``(C, X, Y, Z)``.

Axis and geometry conventions (see ``docs/ARCHITECTURE.md``):

* ``X`` runs along the DICOM row direction (column index ``i``), ``Y`` along the column direction (row
  index ``j``), ``Z`` along the slice normal, ordered by position. For NIfTI this is the stored order.
* ``affine`` maps voxel indices ``(i, j, k, 1)`` to world millimetres in **RAS** (MONAI's convention):
  ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``, where DICOM geometry is LPS (DICOM PS3.3 C.7.6.2.1.1).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch and MONAI take seconds to import; only make_volume needs them, at call time
    import torch
    from monai.data import MetaTensor

__all__ = [
    "LPS_TO_RAS",
    "make_volume",
    "ArrayVolume",
    "array_volumes",
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


@dataclass
class ArrayVolume:
    """A volume held as a NumPy array: what the loaders return inside :func:`array_volumes`.

    It has the attributes of the ``MetaTensor`` volume that describe it (``shape``, ``dtype``, ``affine``,
    ``meta``) and none of its tensor behaviour; it exists so that ``m2f-med inspect`` can describe a series
    without importing torch and MONAI (several seconds at start-up).

    Attributes:
        array: ``(C, X, Y, Z)`` NumPy array.
        affine: ``(4, 4)`` float64 voxel index -> RAS world (mm).
        meta: the same metadata ``make_volume`` puts on a ``MetaTensor``.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, X, Y, Z)``."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """The array's NumPy dtype."""
        return self.array.dtype


_ARRAY_VOLUMES = contextvars.ContextVar("m2f_med_array_volumes", default=False)


@contextlib.contextmanager
def array_volumes() -> Iterator[None]:
    """Within this block ``make_volume`` (and so every loader) returns an :class:`ArrayVolume`, not a ``MetaTensor``.

    For callers that only describe volumes (``m2f-med inspect``): neither torch nor MONAI is imported.
    Context-local (``contextvars``), so other threads keep getting ``MetaTensor`` volumes.
    """
    token = _ARRAY_VOLUMES.set(True)
    try:
        yield
    finally:
        _ARRAY_VOLUMES.reset(token)


def make_volume(array: np.ndarray | torch.Tensor, affine_ras: np.ndarray, **meta: Any) -> MetaTensor:
    """Build an m2f-med volume.

    Args:
        array: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` (a channel axis is added). Kept as given (no dtype change).
        affine_ras: ``(4, 4)`` voxel-index → RAS world (mm).
        **meta: extra metadata; see the key constants of this module. ``problems`` defaults to ``[]``.

    Returns:
        ``MetaTensor`` with ``affine``, ``original_affine``, ``spatial_shape``, ``space="RAS"``,
        ``spacing_mm`` and ``problems`` set, plus ``meta``. Inside :func:`array_volumes` an
        :class:`ArrayVolume` with the same ``affine`` and ``meta`` instead.

    Raises:
        ValueError: if the array is not 3-D or 4-D or the affine is not 4×4 and invertible.
    """
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"a volume must be (C, X, Y, Z); got shape {tuple(array.shape)}")
    aff = np.asarray(affine_ras, dtype=np.float64)
    if aff.shape != (4, 4) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be an invertible 4x4 matrix; got {aff!r}")
    m: dict[str, Any] = {
        "original_affine": aff.copy(),
        "spatial_shape": np.asarray(array.shape[1:]),
        "space": "RAS",
        SPACING: spacing_from_affine(aff),
        PROBLEMS: [],
        MODALITY: "",
    }
    m.update(meta)
    m.setdefault("filename_or_obj", str((m.get(SOURCE_PATHS) or [""])[0]))
    if _ARRAY_VOLUMES.get() and isinstance(array, np.ndarray):
        return ArrayVolume(array, aff, m)
    import torch
    from monai.data import MetaTensor

    t = torch.as_tensor(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    return MetaTensor(t, affine=torch.as_tensor(aff), meta=m)


def add_problem(volume: MetaTensor, message: str) -> None:
    """Append a human-readable note to ``volume.meta["problems"]`` (created if missing)."""
    volume.meta.setdefault(PROBLEMS, []).append(message)


def problems(volume: MetaTensor) -> Sequence[str]:
    """The problems a reader found and handled, as a list of strings (empty if none)."""
    return list(volume.meta.get(PROBLEMS, []))
