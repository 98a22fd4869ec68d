"""Preview PNG: a few axial slices of the image with the predicted mask overlaid (PIL + numpy only).

Slices are shown in the radiological convention when the array axes allow it (patient right on the image
left, anterior at the top), chosen at 25 / 50 / 75 % of the foreground's extent along Z (of the whole volume
when the mask is empty), and tiled left to right. CT is shown in a soft-tissue window (W 400, L 40 HU),
other modalities between their 1st and 99th percentiles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from m2f_med.io.atomic import atomic_write
from m2f_med.io.volume import orientation_code

__all__ = ["render_preview", "preview_slices", "PALETTE"]

# Distinct colours (Okabe-Ito + Tableau) for label values 1, 2, ...; repeats after the last entry.
PALETTE = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167), (227, 119, 194), (188, 189, 34), (23, 190, 207), (148, 103, 189), (140, 86, 75),
], dtype=np.float32)

_CT_WINDOW = (-160.0, 240.0)


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.as_tensor() if hasattr(x, "as_tensor") else x).numpy()
    return np.asarray(x)


def preview_slices(label: np.ndarray, n: int = 3) -> list[int]:
    """Axial indices to show: ``n`` evenly spread over the foreground's Z extent (or the whole volume).

    Args:
        label: ``(X, Y, Z)`` label map.
        n: number of slices.
    """
    depth = label.shape[-1]
    fg = np.flatnonzero(label.reshape(-1, depth).any(axis=0))
    lo, hi = (int(fg[0]), int(fg[-1])) if fg.size else (0, depth - 1)
    qs = np.linspace(0, 1, n + 2)[1:-1]
    return sorted({int(round(lo + q * (hi - lo))) for q in qs})


def _display(slice_xy: np.ndarray, codes: str) -> np.ndarray:
    """Turn an ``(X, Y)`` slice into a ``(rows, cols)`` picture: columns towards patient left, rows towards posterior."""
    a = slice_xy
    horiz = [i for i in (0, 1) if codes[i] in "RL"]
    vert = [i for i in (0, 1) if codes[i] in "AP"]
    if len(horiz) != 1 or len(vert) != 1:  # not an axial plane: show rows = Y, columns = X as stored
        return a.T
    if codes[horiz[0]] == "R":
        a = np.flip(a, axis=horiz[0])
    if codes[vert[0]] == "A":
        a = np.flip(a, axis=vert[0])
    return a.T if horiz[0] == 0 else a


def render_preview(
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    affine: np.ndarray | None = None,
    modality: str = "",
    slices: Sequence[int] | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG with a few axial slices of ``image`` and ``label`` overlaid, atomically.

    Args:
        image: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` image (channel 0 shown; HU for CT).
        label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` integer label map on the same grid.
        path: output ``.png``.
        affine: voxel → RAS affine for the display orientation; defaults to ``image.affine`` if present.
        modality: ``"CT"`` selects the soft-tissue window.
        slices: axial indices; default :func:`preview_slices`.
        alpha: overlay opacity in ``[0, 1]``.

    Returns:
        The written path.

    Raises:
        ValueError: image and label grids differ.
    """
    aff = affine if affine is not None else getattr(image, "affine", None)
    codes = orientation_code(np.asarray(torch.as_tensor(aff, dtype=torch.float64))) if aff is not None else "RAS"
    img = _np(image)
    lab = _np(label)
    img = img[0] if img.ndim == 4 else img
    lab = lab[0] if lab.ndim == 4 else lab
    if img.shape != lab.shape:
        raise ValueError(f"image grid {img.shape} and label grid {lab.shape} differ")
    zs = list(slices) if slices is not None else preview_slices(lab)
    if str(modality).upper() == "CT":
        lo, hi = _CT_WINDOW
    else:
        sample = img[..., zs].astype(np.float32)
        lo, hi = (float(v) for v in np.percentile(sample, (1, 99)))
        hi = hi if hi > lo else lo + 1.0
    tiles = []
    for z in zs:
        gray = np.clip((img[..., z].astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
        rgb = np.repeat(_display(gray, codes)[..., None], 3, axis=2)
        lz = _display(lab[..., z], codes)
        fg = lz > 0
        if fg.any():
            colours = PALETTE[(lz[fg].astype(np.int64) - 1) % len(PALETTE)]
            rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
        tiles.append(np.clip(rgb, 0, 255).astype(np.uint8))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
    picture = Image.fromarray(np.concatenate(tiles, axis=1))
    out = Path(path)
    with atomic_write(out) as tmp:
        picture.save(tmp, format="PNG")
    return out
