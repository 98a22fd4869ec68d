"""Write m2f-med volumes to NIfTI (nibabel), atomically and with the volume's exact affine.

Label maps get the smallest unsigned integer dtype that holds them (uint8, else uint16); images are
written as float32. Both the sform and the qform are set, with the codes the volume came with from a
NIfTI file (``meta["nifti_xform_codes"]``, if > 0) and otherwise code 1 ("scanner anatomical"). A qform
can only hold a rotation, so for a sheared affine (gantry tilt) the qform is nibabel's nearest rigid
approximation and readers should use the sform, which is exact (NIfTI-1 ``nifti1.h``, "METHOD 3").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from m2f_med.io.atomic import atomic_write
from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import NIFTI_XFORM_CODES

__all__ = ["label_dtype", "write_nifti"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def label_dtype(values: np.ndarray, path: str | os.PathLike | None = None) -> np.dtype:
    """The smallest NIfTI-friendly unsigned dtype for a label map: uint8 if max ≤ 255, else uint16.

    Args:
        values: label array of any shape; integer, bool, or float holding whole numbers.
        path: the output file, named in errors.

    Returns:
        ``np.dtype("uint8")`` or ``np.dtype("uint16")``.

    Raises:
        VolumeError: negative labels, labels above 65535, or non-integer values.
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return np.dtype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.rint(arr)):
            raise VolumeError(path, "label map has non-integer values; round or threshold it first")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise VolumeError(path, f"label map has negative values (min {lo}); labels must be 0..65535")
    if hi > 65535:
        raise VolumeError(path, f"label map has values above 65535 (max {hi}); NIfTI labels are written as uint16 at most")
    return np.dtype(np.uint8) if hi <= 255 else np.dtype(np.uint16)


def write_nifti(volume: torch.Tensor, path: str | os.PathLike, *, label: bool | None = None) -> Path:
    """Write a volume to ``.nii`` / ``.nii.gz`` with its exact affine, atomically.

    Args:
        volume: ``MetaTensor`` ``(C, X, Y, Z)`` with an RAS ``affine`` (mm). ``C == 1`` is written as a
            3-D image; ``C > 1`` as a 4-D image ``(X, Y, Z, C)`` (images only). A plain tensor or array is
            refused: without an affine the geometry would be invented.
        path: output file; must end in ``.nii`` or ``.nii.gz``. Parent folders are created.
        label: write as a label map (smallest of uint8/uint16). ``None`` (default): a label map when the
            volume has an integer or bool dtype, else a float32 image.

    Returns:
        The written path.

    Raises:
        VolumeError: wrong suffix, no affine, a label map with negative, > 65535 or non-integer values,
            or a multi-channel label map. No partial file is left behind.

    See Also:
        ``m2f_med.io.image_files.load_image_file`` reads the file back with the same geometry.
    """
    import nibabel as nib

    out = Path(path)
    if not out.name.lower().endswith(_NIFTI_SUFFIXES):
        raise VolumeError(out, "NIfTI output must end in .nii or .nii.gz")
    affine = getattr(volume, "affine", None)
    if affine is None or not isinstance(volume, torch.Tensor):
        raise VolumeError(out, "write_nifti needs a MetaTensor volume with an affine")
    affine = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
    if affine.shape != (4, 4):
        raise VolumeError(out, f"expected a single 4x4 affine, got shape {affine.shape}")
    data = torch.as_tensor(volume).detach().cpu().numpy()  # a copy-free view; never written to
    if data.ndim != 4:
        raise VolumeError(out, f"expected a (C, X, Y, Z) volume, got shape {tuple(data.shape)}")
    is_label = label if label is not None else (data.dtype == np.bool_ or np.issubdtype(data.dtype, np.integer))
    if is_label:
        if data.shape[0] != 1:
            raise VolumeError(out, f"a label map must have one channel, got {data.shape[0]}")
        dtype = label_dtype(data, out)
        array = data[0].astype(dtype)
    else:
        array = data.astype(np.float32)
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)

    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(array.dtype)
    codes = dict(getattr(volume, "meta", {}).get(NIFTI_XFORM_CODES) or {})
    sform_code = int(codes.get("sform_code", 0)) or 1
    qform_code = int(codes.get("qform_code", 0)) or sform_code
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(out) as tmp:
        nib.save(img, str(tmp))
    return out
