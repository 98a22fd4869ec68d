"""Single-file image formats: NIfTI through nibabel; NRRD, MetaImage, GIPL and the rest through SimpleITK.

Both paths return the m2f-med volume of ``m2f_med.io.volume``: a ``(C, X, Y, Z)`` ``MetaTensor`` whose
array axes are the file's stored voxel axes and whose affine maps voxel indices to RAS millimetres.

Rules (each applied case is recorded in ``meta["problems"]``):

* NIfTI affine (NIfTI-1 header, ``nifti1.h`` "METHOD 2/3"): the sform if ``sform_code > 0``, else the
  qform if ``qform_code > 0``, else the pixdim-only base affine. When both codes are set and the two
  matrices differ by more than 1e-3 mm, the disagreement is reported and the sform is used.
* ``scl_slope``/``scl_inter`` are applied to intensities; a slope of 0 or NaN means "no scaling"
  (nibabel's ``get_slope_inter``).
* ITK formats store LPS direction/origin/spacing: ``affine_ras = diag(-1, -1, 1, 1) @ [D·diag(s) | o]``.
* Extra axes: trailing axes of size 1 are dropped; an image holding several volumes (a 4th axis or
  vector components) is an error unless ``volume_index`` picks one. A 2-D image gets ``Z = 1``.
* ``label=True``: integers are kept (``uint16 → int32``, ``uint32 → int64`` because torch lacks full
  unsigned support); floats that are whole numbers (within 1e-3) are rounded with a note; other floats
  are refused. Images come back as float32.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m2f_med.io.errors import VolumeError
from m2f_med.io.volume import LPS_TO_RAS, MODALITY, SOURCE_FORMAT, SOURCE_PATHS, make_volume

if TYPE_CHECKING:  # MONAI takes seconds to import; make_volume imports it when it builds a MetaTensor
    from monai.data import MetaTensor

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_XFORM_CODES",
    "image_format",
    "is_image_file",
    "load_image_file",
]

# meta key: {"sform_code": int, "qform_code": int} of a NIfTI source, so a writer can keep them
NIFTI_XFORM_CODES = "nifti_xform_codes"

# suffix -> source_format; longest suffixes are tried first
IMAGE_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".hdr": "nifti",
    ".img": "nifti",
    ".img.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".seg.nrrd": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".gipl": "gipl",
    ".gipl.gz": "gipl",
    ".mnc": "minc",
    ".vtk": "vtk",
    ".nia": "nifti",
}

_AFFINE_TOL_MM = 1e-3
_LABEL_ROUND_TOL = 1e-3


def image_format(path: str | os.PathLike) -> str | None:
    """The ``source_format`` name for a file's suffix (``"nifti"``, ``"nrrd"``, ``"mha"``, ...), else None.

    Args:
        path: a file name; only its suffixes are looked at (case-insensitive).
    """
    name = Path(path).name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return IMAGE_SUFFIXES[suffix]
    return None


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is an existing file with a suffix this module reads (NIfTI, NRRD, MHA, GIPL, ...)."""
    return Path(path).is_file() and image_format(path) is not None


def load_image_file(
    path: str | os.PathLike,
    *,
    label: bool = False,
    volume_index: int | None = None,
    modality: str | None = None,
) -> MetaTensor:
    """Load a NIfTI / NRRD / MetaImage / GIPL file as an m2f-med volume.

    Args:
        path: the image file. NIfTI (``.nii``, ``.nii.gz``, ``.hdr/.img``) is read by nibabel, every other
            suffix of ``IMAGE_SUFFIXES`` by SimpleITK.
        label: the file is a label map: keep an integer dtype (see the module rules for floats).
        volume_index: which volume to take from a 4-D file (0-based); required when there are several.
        modality: stored as ``meta["modality"]`` (files carry none; ``""`` when not given).

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``: float32 for images, an integer dtype for labels;
        affine voxel → RAS (mm); meta ``source_format``, ``source_paths``, ``problems`` and, for NIfTI,
        ``nifti_xform_codes``.

    Raises:
        VolumeError: the file is missing, unreadable, not 2-D/3-D (after dropping size-1 axes) without a
            valid ``volume_index``, has a singular affine, or is a label map with non-integer values.

    See Also:
        NIfTI-1 header (``nifti1.h``) on qform/sform; ITK ``Image`` physical-space conventions (LPS).
    """
    p = Path(path)
    if not p.is_file():
        raise VolumeError(p, "file not found")
    fmt = image_format(p) or "itk"
    if fmt == "nifti":
        array, affine, problems, extra = _read_nifti(p)
    else:
        array, affine, problems = _read_itk(p)
        extra = {}
    array = _select_volume(p, array, volume_index, problems)
    array = _as_label(p, array, problems) if label else array.astype(np.float32, copy=False)
    try:
        return make_volume(
            array,
            affine,
            **{MODALITY: modality or "", SOURCE_FORMAT: fmt, SOURCE_PATHS: [str(p)], "problems": problems},
            **extra,
        )
    except ValueError as err:
        raise VolumeError(p, str(err)) from None


def _read_nifti(p: Path) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        img = nib.load(str(p))
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError) as err:
        raise VolumeError(p, f"not a readable NIfTI file ({err})") from None
    hdr = img.header
    problems: list[str] = []
    extra: dict[str, Any] = {}
    if hasattr(hdr, "get_sform"):
        sform, scode = hdr.get_sform(coded=True)
        qform, qcode = hdr.get_qform(coded=True)
        scode, qcode = int(scode), int(qcode)
        extra[NIFTI_XFORM_CODES] = {"sform_code": scode, "qform_code": qcode}
        if scode > 0:
            affine = sform
            if qcode > 0 and not np.allclose(sform, qform, atol=_AFFINE_TOL_MM):
                diff = float(np.abs(sform - qform).max())
                problems.append(
                    f"sform and qform disagree (max difference {diff:.3g}); used the sform (code {scode})"
                )
        elif qcode > 0:
            affine = qform
        else:
            affine = hdr.get_base_affine()
            problems.append("no sform or qform set (both codes 0); used the voxel-size-only affine")
    else:  # Analyze 7.5: no orientation at all
        affine = img.affine
        problems.append("Analyze header has no orientation; used the voxel-size-only affine")
    try:
        array = np.asanyarray(img.dataobj)
    except (HeaderDataError, OSError, EOFError, ValueError, zlib.error) as err:
        raise VolumeError(p, f"cannot read the voxel data ({err})") from None
    return np.asarray(array), np.asarray(affine, dtype=np.float64), problems, extra


def _read_itk(p: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise VolumeError(p, f"SimpleITK cannot read this file ({first})") from None
    dim = img.GetDimension()
    # numpy order is ITK's index order reversed, (t, z, y, x), plus a last axis for vector components
    arr = sitk.GetArrayFromImage(img)
    order = list(range(dim))[::-1] + list(range(dim, arr.ndim))
    arr = arr.transpose(order)  # (x, y[, z][, t][, components])
    spatial_nd = min(dim, 3)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:spatial_nd, :spatial_nd]
    spacing = np.asarray(img.GetSpacing()[:spatial_nd], dtype=np.float64)
    origin = np.asarray(img.GetOrigin()[:spatial_nd], dtype=np.float64)
    lps = np.eye(4)
    lps[:spatial_nd, :spatial_nd] = direction * spacing[None, :]
    lps[:spatial_nd, 3] = origin
    if spatial_nd == 2:  # a 2-D image lies in the plane z = 0 of its own frame
        arr = arr[:, :, None, ...]
    return np.asarray(arr), LPS_TO_RAS @ lps, []


def _select_volume(p: Path, arr: np.ndarray, volume_index: int | None, problems: list[str]) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim > 3:
        extra = arr.shape[3:]
        if len(extra) > 1:
            arr = arr.reshape(arr.shape[:3] + (int(np.prod(extra)),))
        n = arr.shape[3]
        if volume_index is None:
            raise VolumeError(p, f"the file holds {n} volumes (shape {tuple(arr.shape)}); pick one with --volume-index N (volume_index= in Python)")
        if not -n <= volume_index < n:
            raise VolumeError(p, f"--volume-index {volume_index} out of range for {n} volumes")
        arr = arr[..., volume_index]
        problems.append(f"took volume {volume_index % n} of {n}")
    elif volume_index not in (None, 0, -1):
        raise VolumeError(p, f"--volume-index {volume_index} given but the file holds a single volume")
    return arr


def _as_label(p: Path, arr: np.ndarray, problems: list[str]) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint16:
            return arr.astype(np.int32)
        if arr.dtype in (np.uint32, np.uint64):
            return arr.astype(np.int64)
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise VolumeError(p, f"label map has unsupported dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise VolumeError(p, "label map contains NaN or infinite values")
    rounded = np.rint(arr)
    off = float(np.abs(arr - rounded).max()) if arr.size else 0.0
    if off > _LABEL_ROUND_TOL:
        raise VolumeError(p, f"label map has non-integer values (up to {off:.3g} from a whole number)")
    problems.append(f"label map stored as {arr.dtype}; rounded to integers")
    lo, hi = (float(rounded.min()), float(rounded.max())) if arr.size else (0.0, 0.0)
    if lo >= np.iinfo(np.int32).min and hi <= np.iinfo(np.int32).max:
        return rounded.astype(np.int32)
    return rounded.astype(np.int64)
