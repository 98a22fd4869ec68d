"""Preview PNG: a few axial slices of the image with the predicted mask overlaid, and a legend (PIL + numpy).

Colours come from the one m2f-med colour table (``m2f_med.io.colors.label_rgb``), so every structure has the
RGB the napari plugin shows and the DICOM-SEG recommends. Below the slices a legend lists every label
present in the volume: a colour swatch, the label value and the structure name. Slices are shown in the radiological convention when the array axes allow it (patient right on the image
left, anterior at the top), chosen at 25 / 50 / 75 % of the foreground's extent along Z (of the whole volume
when the mask is empty), and tiled left to right. CT is shown in a soft-tissue window (W 400, L 40 HU),
other modalities between their 1st and 99th percentiles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from m2f_med.io.atomic import atomic_write
from m2f_med.io.colors import label_rgb
from m2f_med.io.volume import orientation_code

__all__ = ["render_preview", "preview_slices", "label_lut"]

_CT_WINDOW = (-160.0, 240.0)
_LEGEND_FONT_PX = 14
_SWATCH_PX = 12


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


def label_lut(values, names: Mapping[int, str] | None = None) -> np.ndarray:
    """RGB look-up table ``(max(values) + 1, 3)`` float32 (0-255) from the shared colour table.

    Args:
        values: the label values to colour (ints > 0).
        names: ``{label value: structure name}``; named organs take their fixed colour.
    """
    names = {int(k): str(v) for k, v in (names or {}).items()}
    values = [int(v) for v in values]
    lut = np.zeros((max([0, *values]) + 1, 3), dtype=np.float32)
    for v in values:
        if v > 0:
            lut[v] = label_rgb(v, names.get(v))
    return lut


def _qc_panel(lines: Sequence[str], width: int) -> Image.Image:
    """White-on-black text lines (the QC reasons), wrapped to ``width`` pixels."""
    import textwrap

    from PIL import ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=_LEGEND_FONT_PX)
    except TypeError:
        font = ImageFont.load_default()
    chars = max(20, width // max(1, _LEGEND_FONT_PX // 2 + 1))
    wrapped = [w for line in lines for w in (textwrap.wrap(line, chars) or [""])]
    line_h = _LEGEND_FONT_PX + 6
    panel = Image.new("RGB", (width, len(wrapped) * line_h + 8), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for k, text in enumerate(wrapped):
        draw.text((6, 4 + k * line_h), text, fill=(255, 210, 80), font=font)
    return panel


def _legend(values: Sequence[int], names: Mapping[int, str], lut: np.ndarray, width: int,
            qc: Mapping[int, str] | None = None) -> Image.Image:
    """A legend panel: one swatch + "value name" per label, in as many columns as ``width`` allows; a QC
    verdict other than ok is appended to the name."""
    from PIL import ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=_LEGEND_FONT_PX)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        font = ImageFont.load_default()
    qc = qc or {}
    texts = [f"{v} {names.get(v, f'label {v}')}" + (f" [QC {qc[v]}]" if qc.get(v) not in (None, "ok") else "")
             for v in values]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(probe.textlength(t, font=font)) for t in texts)
    line_h = _LEGEND_FONT_PX + 6
    col_w = _SWATCH_PX + 6 + text_w + 16
    ncols = max(1, width // col_w)
    nrows = -(-len(texts) // ncols)
    panel = Image.new("RGB", (max(width, col_w), nrows * line_h + 8), (0, 0, 0))
    draw = ImageDraw.Draw(panel)
    for k, (v, text) in enumerate(zip(values, texts)):
        x, y = 6 + (k // nrows) * col_w, 4 + (k % nrows) * line_h
        swatch = tuple(int(c) for c in lut[v])
        draw.rectangle([x, y + 2, x + _SWATCH_PX, y + 2 + _SWATCH_PX], fill=swatch)
        draw.text((x + _SWATCH_PX + 6, y), text, fill=(255, 255, 255), font=font)
    return panel


def render_preview(
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    affine: np.ndarray | None = None,
    modality: str = "",
    slices: Sequence[int] | None = None,
    alpha: float = 0.45,
    names: Mapping[int, str] | None = None,
    legend: bool = True,
    qc: Sequence[Mapping[str, object]] | None = None,
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
        names: ``{label value: structure name}`` (e.g. the model's ``labels.json``): colours from the shared
            table (``m2f_med.io.colors``) and the legend text; unnamed values show as "label <value>".
        legend: add the legend panel below the slices (labels present anywhere in the volume).
        qc: rows of :func:`m2f_med.inference.qc.quality_control` (``label``, ``name``, ``qc``,
            ``qc_reasons``): the legend marks each structure whose verdict is not ok, and a panel below lists
            the reasons.

    Returns:
        The written path: a PNG whose top rows are the slices side by side, then the legend.

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
    names = {int(k): str(v) for k, v in (names or {}).items() if str(k).strip().isdigit()}
    counts = np.zeros(int(lab.max(initial=0)) + 1, dtype=np.int64)
    for z in range(lab.shape[-1]):  # slice by slice: no sort of the whole volume
        counts += np.bincount(lab[..., z].astype(np.int64).ravel(), minlength=counts.size)
    present = [int(v) for v in np.flatnonzero(counts) if v > 0]
    lut = label_lut(present, names)
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
            colours = lut[lz[fg].astype(np.int64)]
            rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours
        tiles.append(np.clip(rgb, 0, 255).astype(np.uint8))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
    picture = Image.fromarray(np.concatenate(tiles, axis=1))
    verdicts = {int(r["label"]): str(r.get("qc")) for r in (qc or [])}
    panels = []
    if legend and present:
        panels.append(_legend(present, names, lut, picture.width, verdicts))
    lines = [f"QC {r.get('qc')}: {r.get('name')}: " + "; ".join(str(x) for x in r.get("qc_reasons") or [])
             for r in (qc or []) if r.get("qc") in ("check", "fail")]
    if lines:
        panels.append(_qc_panel(lines, picture.width))
    for panel in panels:
        canvas = Image.new("RGB", (max(picture.width, panel.width), picture.height + panel.height), (0, 0, 0))
        canvas.paste(picture, (0, 0))
        canvas.paste(panel, (0, picture.height))
        picture = canvas
    out = Path(path)
    with atomic_write(out) as tmp:
        picture.save(tmp, format="PNG")
    return out
