"""Is this input what the model was trained on? Modality checks before inference.

A DICOM series states its Modality; a NIfTI/NRRD/MHA file usually does not (``meta["modality"] == ""``).
For a CT model such a file is accepted only if its intensities look like Hounsfield units: CT numbers are
defined relative to water (0 HU) and air (-1000 HU), and scanners store them in [-1024, 3071] (12-bit,
RescaleIntercept -1024; Hounsfield 1973; Kalender, *Computed Tomography*, 3rd ed. 2011, ch. 2). An MR
image has arbitrary non-negative signal (or z-scores after normalisation) and no air/fat at -1000/-100.
"""

from __future__ import annotations

import numpy as np
import torch

from m2f_med.io.errors import VolumeError

__all__ = ["ct_intensity_problem", "check_modality"]

HU_RANGE = (-1024.0, 3071.0)  # 12-bit CT numbers as stored by scanners
_TOLERANCE = 100.0  # HU outside HU_RANGE still counted as inside (reconstruction overshoot)
_MAX_OUTSIDE = 0.005  # share of voxels allowed outside the tolerated range
_AIR_OR_FAT_HU = -100.0  # fat is about -100 HU, air -1000 HU: a real CT field of view contains one of them
_MIN_LOW_SHARE = 0.05


def ct_intensity_problem(image: torch.Tensor | np.ndarray, max_voxels: int = 2_000_000) -> str | None:
    """Why ``image`` does not look like CT in HU, or ``None`` if it does.

    Args:
        image: ``(C, X, Y, Z)`` or ``(X, Y, Z)``; channel 0 is tested.
        max_voxels: voxels examined (a regular subsample of larger volumes).

    Returns:
        ``None`` when at most 0.5 % of the voxels lie outside [-1124, 3171] HU (the scanner's padding value,
        a single value at or below -1024 filling the area outside the reconstruction circle, is not counted)
        and at least 5 % lie at or below -100 HU (air or fat); else a one-line reason with the numbers.
    """
    x = image.detach().cpu() if isinstance(image, torch.Tensor) else image
    x = np.asarray(x.as_tensor() if hasattr(x, "as_tensor") else x)
    x = x[0] if x.ndim == 4 else x
    step = max(1, int(np.ceil((x.size / max_voxels) ** (1 / 3))))
    v = x[::step, ::step, ::step].astype(np.float32).ravel()
    if v.size == 0:
        return "the image is empty"
    lo, hi = float(v.min()), float(v.max())
    if lo <= HU_RANGE[0]:
        v = v[v != lo]  # padding outside the reconstruction circle (e.g. -1024, -2000, -3024)
    if v.size == 0:
        return "the image holds a single value"
    outside = float(np.mean((v < HU_RANGE[0] - _TOLERANCE) | (v > HU_RANGE[1] + _TOLERANCE)))
    low = float(np.mean(v <= _AIR_OR_FAT_HU))
    if outside > _MAX_OUTSIDE:
        return (f"{100 * outside:.1f} % of the voxels lie outside the CT range [-1024, 3071] HU "
                f"(values {lo:g} .. {hi:g})")
    if low < _MIN_LOW_SHARE:
        return (f"only {100 * low:.1f} % of the voxels are at or below -100 HU (no air or fat; values {lo:g} .. "
                f"{hi:g}, median {float(np.median(v)):g})")
    return None


def check_modality(volume, expected: str | None, declared: str | None = None, source=None) -> str:
    """Refuse an input whose modality differs from the model's; returns the modality taken.

    Args:
        volume: ``(C, X, Y, Z)`` MetaTensor (``meta["modality"]``, ``""`` when the file does not say).
        expected: the bundle's modality (``inference.yaml`` / ``metadata.json``), ``None`` for any.
        declared: the user's ``--modality``; it stands in for a missing ``meta["modality"]`` (a NIfTI file
            has none) and skips the intensity test.
        source: the path named in errors.

    Returns:
        The modality used (the file's, else ``declared``, else ``expected`` once the CT test passed, else ``""``).

    Raises:
        VolumeError: the file states another modality than ``expected`` (or than ``declared``); or it states
            none, ``expected`` is CT, nothing was declared and :func:`ct_intensity_problem` finds a problem.
    """
    stated = str(getattr(volume, "meta", {}).get("modality", "") or "").upper()
    declared = (declared or "").upper() or None
    expected = (expected or "").upper() or None
    if stated:
        if expected and stated != expected:
            raise VolumeError(source, f"modality {stated}, but the model expects {expected}")
        return stated
    if declared:
        if expected and declared != expected:
            raise VolumeError(source, f"--modality {declared}, but the model expects {expected}")
        return declared
    if expected == "CT":
        problem = ct_intensity_problem(volume)
        if problem:
            raise VolumeError(source, f"no modality in the file and it does not look like CT in HU: {problem}; "
                                      "pass --modality CT if it is CT")
        return "CT"
    return expected or ""
