"""Per-structure statistics of a label map over its image: voxel count, volume (mL), mean / std intensity.

Intensities are the image's own values: Hounsfield units (HU) for CT (the io layer applies
RescaleSlope/Intercept), arbitrary units otherwise. Sums are accumulated slab by slab in float64 with
``numpy.bincount``, so no float copy of the whole volume is made.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2f_med.io.atomic import atomic_write

__all__ = ["structure_statistics", "write_statistics", "STAT_FIELDS"]

STAT_FIELDS = ("label", "name", "voxels", "volume_ml", "mean_intensity", "std_intensity", "intensity_unit",
               "confidence", "qc", "qc_reasons")  # qc*: m2f_med.inference.qc (empty when not run)

_SLAB = 32


def _plain(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def label_image_grid(label: Any, image: Any, affine: Any = None, caller: str = "statistics") -> tuple[np.ndarray, np.ndarray, float]:
    """A label map and its image as plain ``(X, Y, Z)`` arrays on one grid, with the voxel volume.

    Args:
        label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` label map (array, tensor or MetaTensor).
        image: the image on the same grid, same layouts.
        affine: ``(4, 4)`` voxel-to-world in mm; default ``label.affine``.
        caller: named in the error when no affine is available.

    Returns:
        ``(label, image, voxel_ml)``: the arrays and the volume of one voxel in millilitres.

    Raises:
        ValueError: label and image grids differ, or no affine is available.
    """
    aff = affine if affine is not None else getattr(label, "affine", None)
    if aff is None:
        raise ValueError(f"{caller} needs an affine (voxel size in mm)")
    aff = np.asarray(torch.as_tensor(aff, dtype=torch.float64).cpu().numpy())
    voxel_ml = abs(float(np.linalg.det(aff[:3, :3]))) / 1000.0
    lab = _plain(label)
    img = _plain(image)
    lab = lab[0] if lab.ndim == 4 else lab
    img = img[0] if img.ndim == 4 else img
    if lab.shape != img.shape:
        raise ValueError(f"label grid {lab.shape} differs from image grid {img.shape}")
    return lab, img, voxel_ml


def structure_statistics(
    label: torch.Tensor | np.ndarray,
    image: torch.Tensor | np.ndarray,
    labels: Mapping[int, str],
    *,
    affine: np.ndarray | None = None,
    modality: str = "",
    confidence: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Volume and intensity statistics of each labelled structure.

    Args:
        label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` integer label map on the image grid.
        image: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` image; channel 0 is used (HU for CT).
        labels: ``{id: name}``; every listed structure gets a row, absent ones with 0 voxels.
        affine: 4×4 voxel → world (mm); defaults to ``label.affine``. Voxel volume = ``|det(affine[:3, :3])|``.
        modality: ``"CT"`` gives ``intensity_unit = "HU"``, anything else ``"a.u."``.
        confidence: optional ``{id: mean probability of the predicted class}`` to include.

    Returns:
        One dict per structure with :data:`STAT_FIELDS`: ``volume_ml`` in millilitres (= cm³),
        ``mean_intensity`` / ``std_intensity`` (population std, ``None`` when the structure is empty).

    Raises:
        ValueError: label and image grids differ, or no affine is available.
    """
    lab, img, voxel_ml = label_image_grid(label, image, affine, "structure_statistics")
    names = {int(k): str(v) for k, v in labels.items()}
    n = max([*names, int(lab.max()) if lab.size else 0]) + 1
    count = np.zeros(n, dtype=np.int64)
    s1 = np.zeros(n)
    s2 = np.zeros(n)
    for z0 in range(0, lab.shape[-1], _SLAB):
        li = lab[..., z0:z0 + _SLAB].astype(np.int64).ravel()
        vi = img[..., z0:z0 + _SLAB].astype(np.float64).ravel()
        count += np.bincount(li, minlength=n)
        s1 += np.bincount(li, weights=vi, minlength=n)
        s2 += np.bincount(li, weights=vi * vi, minlength=n)
    unit = "HU" if str(modality).upper() == "CT" else "a.u."
    rows = []
    for k in sorted(names):
        c = int(count[k])
        mean = s1[k] / c if c else None
        std = float(np.sqrt(max(s2[k] / c - mean * mean, 0.0))) if c else None
        conf = None if confidence is None or confidence.get(k) is None else round(float(confidence[k]), 4)
        rows.append({
            "label": k, "name": names[k], "voxels": c,
            "volume_ml": round(c * voxel_ml, 4), "mean_intensity": None if mean is None else round(float(mean), 3),
            "std_intensity": None if std is None else round(std, 3), "intensity_unit": unit, "confidence": conf,
        })
    return rows


def write_statistics(rows: list[dict[str, Any]], json_path: str | os.PathLike, csv_path: str | os.PathLike | None = None) -> list[Path]:
    """Write statistics rows as JSON (``{"structures": rows}``) and CSV (columns :data:`STAT_FIELDS`), atomically.

    Returns:
        The written paths.
    """
    written = []
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps({"structures": rows}, indent=2))
    written.append(Path(json_path))
    if csv_path is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(STAT_FIELDS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "; ".join(v) if isinstance(v := r.get(k), list) else "" if v is None else v
                        for k in STAT_FIELDS})
        with atomic_write(csv_path) as tmp:
            tmp.write_text(buf.getvalue())
        written.append(Path(csv_path))
    return written
