"""Files of an instance (lesion) result: ``instances.nii.gz``, ``instances.json``, one-segment-per-lesion
DICOM-SEG, and a preview with each lesion outlined and numbered.

Used by ``m2f-med predict`` for bundles with ``thing_classes`` and by the napari Review widget when saving.
"No lesion found" is a normal outcome: an empty table with a note, an all-zero ``instances.nii.gz``, and
no DICOM-SEG (a SEG needs at least one segment).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from m2f_med.inference.instances import Instances
from m2f_med.io.atomic import atomic_write

__all__ = ["NO_LESION_NOTE", "instance_volume", "lesion_segment_infos", "render_lesion_preview",
           "write_lesion_seg"]

NO_LESION_NOTE = "no lesion found"


def instance_volume(instances: Instances, reference: MetaTensor) -> MetaTensor:
    """The instance map as a ``(1, X, Y, Z)`` MetaTensor on ``reference``'s grid (its affine and meta).

    Raises:
        ValueError: the grids differ in shape.
    """
    if tuple(instances.instance_map.shape) != tuple(reference.shape[1:]):
        raise ValueError(f"instance map {instances.instance_map.shape} is not on the image grid {tuple(reference.shape[1:])}")
    dtype = np.uint8 if int(instances.instance_map.max(initial=0)) < 256 else np.uint16
    meta = {k: v for k, v in reference.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
    return MetaTensor(torch.from_numpy(instances.instance_map[None].astype(dtype)), affine=reference.affine,
                      meta=meta)


def lesion_segment_infos(rows: Sequence[Mapping[str, Any]], algorithm: str | None, series_uid: str | None = None):
    """One ``SegmentInfo`` per instance row: label ``"<class> <id>"`` (e.g. "lesion 1"), its own TrackingID
    and TrackingUID (PS3.3 C.8.20.2; a new UID per lesion and result), algorithm AUTOMATIC unless
    ``algorithm`` is ``None`` (MANUAL) or the row says ``"edited": true`` (SEMIAUTOMATIC).

    Returns:
        ``{instance id: SegmentInfo}``.
    """
    import highdicom as hd

    from m2f_med.io.colors import label_rgb
    from m2f_med.io.dicom_seg import SegmentInfo

    out = {}
    for row in rows:
        i = int(row["id"])
        if not algorithm:
            kind, alg = "MANUAL", None
        else:
            kind, alg = ("SEMIAUTOMATIC" if row.get("edited") else "AUTOMATIC"), algorithm
        name = f"{row.get('class_name', 'lesion')} {i}"
        out[i] = SegmentInfo(i, name, label_rgb(i, None), kind, alg, tracking_id=name, tracking_uid=hd.UID())
    return out


def write_lesion_seg(instances_volume: MetaTensor, reference: MetaTensor, path: str | os.PathLike,
                     rows: Sequence[Mapping[str, Any]], algorithm: str | None = "m2f-med") -> Path | None:
    """Write the instances as a DICOM-SEG with one segment per lesion; ``None`` (nothing written) without lesions.

    Args:
        instances_volume: ``(1, X, Y, Z)`` instance ids on the source series' grid.
        reference: the source DICOM series (``load_volume``), whose instances the frames reference.
        path: output ``.dcm``.
        rows: the instance table rows (:func:`~m2f_med.inference.instances.instance_table`).
        algorithm: model name (AUTOMATIC segments) or ``None`` (MANUAL).

    Raises:
        VolumeError: from :func:`m2f_med.io.dicom_seg.write_dicom_seg` (e.g. not a DICOM reference).
    """
    from m2f_med.io.dicom_seg import write_dicom_seg

    if not rows or not int(torch.as_tensor(instances_volume).count_nonzero()):
        return None
    return write_dicom_seg(instances_volume, reference, path, segments=lesion_segment_infos(rows, algorithm),
                           series_description="m2f-med lesions (not for clinical use)")


_QC_COLOURS = {"ok": (255, 255, 0), "check": (255, 160, 0), "fail": (255, 60, 60)}


def render_lesion_preview(
    image: MetaTensor,
    instance_map: np.ndarray,
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    modality: str = "",
    max_slices: int = 3,
    scan_note: str = "",
) -> Path:
    """PNG of up to ``max_slices`` axial slices (through the centres of the highest-scoring lesions), each
    lesion outlined in its colour and numbered with its id (followed by its QC verdict when that is not
    "ok"); "no lesion found" written on a middle slice.

    Args:
        image: ``(C, X, Y, Z)`` MetaTensor (RAS affine); channel 0 is shown (CT soft-tissue window).
        instance_map: ``(X, Y, Z)`` instance ids on the same grid.
        path: output ``.png``, written atomically.
        rows: the instance table (``id``, ``bbox_voxels``, optional ``qc``).
        modality: ``"CT"`` selects the -160..240 HU window, else the 1-99 percentiles.
        max_slices: number of slices shown.
        scan_note: a scan-level QC note written in a strip below the slices, wrapped to their width (e.g. the
            input is larger than the training images).

    Raises:
        ValueError: image and instance grids differ.
    """
    from m2f_med.inference.preview import _display
    from m2f_med.io.colors import label_rgb
    from m2f_med.io.volume import orientation_code

    img = np.asarray(image[0].detach().cpu().numpy(), np.float32)
    if img.shape != instance_map.shape:
        raise ValueError(f"image grid {img.shape} and instance grid {instance_map.shape} differ")
    codes = orientation_code(np.asarray(torch.as_tensor(image.affine, dtype=torch.float64)))
    zs: list[int] = []
    for row in rows:
        lo, hi = row["bbox_voxels"]["min"][2], row["bbox_voxels"]["max"][2]
        z = int(np.argmax((instance_map[..., lo:hi + 1] == row["id"]).sum((0, 1)))) + lo
        if z not in zs:
            zs.append(z)
        if len(zs) == max_slices:
            break
    if not zs:
        zs = [img.shape[2] // 2]
    if str(modality).upper() == "CT":
        lo_v, hi_v = -160.0, 240.0
    else:
        lo_v, hi_v = (float(v) for v in np.percentile(img[..., zs], (1, 99)))
        hi_v = hi_v if hi_v > lo_v else lo_v + 1.0
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    # QC verdicts (m2f_med.inference.lesion_qc): "check" in orange, "fail" in red after the lesion's number
    qc_of = {int(r["id"]): r.get("qc") for r in rows}
    tiles = []
    for z in sorted(zs):
        gray = np.clip((img[..., z] - lo_v) / (hi_v - lo_v), 0, 1) * 255
        rgb = np.repeat(_display(gray, codes)[..., None], 3, axis=2).astype(np.uint8)
        ids = _display(instance_map[..., z], codes)
        labels_here = [int(v) for v in np.unique(ids) if v]
        for i in labels_here:
            m = ids == i
            edge = m & ~ndimage.binary_erosion(m)
            rgb[edge] = label_rgb(i, None)
        tile = Image.fromarray(rgb)
        draw = ImageDraw.Draw(tile)
        for i in labels_here:
            # at the centre of the lesion's largest piece on this slice (not between two pieces)
            pieces, n = ndimage.label(ids == i)
            largest = 1 + int(np.argmax(np.bincount(pieces.ravel())[1:])) if n > 1 else 1
            ys, xs = np.nonzero(pieces == largest)
            verdict = qc_of.get(i, "ok")
            text = str(i) if verdict in ("ok", None) else f"{i} {verdict}"
            draw.text((int(xs.mean()) - 4, int(ys.mean()) - 7), text, fill=_QC_COLOURS.get(verdict, (255, 255, 0)),
                      font=font)
        if not rows:
            draw.text((4, 4), NO_LESION_NOTE, fill=(255, 255, 0), font=font)
        tiles.append(np.asarray(tile))
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
    picture = Image.fromarray(np.concatenate(tiles, axis=1))
    if scan_note:  # in a strip below the slices, wrapped to their width, never over the anatomy
        lines = textwrap.wrap(scan_note, width=max(12, picture.width // 8), break_long_words=False)
        strip = Image.new("RGB", (picture.width, 18 * len(lines) + 6))
        draw = ImageDraw.Draw(strip)
        for k, line in enumerate(lines):
            draw.text((4, 3 + 18 * k), line, fill=_QC_COLOURS["check"], font=font)
        framed = Image.new("RGB", (picture.width, picture.height + strip.height))
        framed.paste(picture, (0, 0))
        framed.paste(strip, (0, picture.height))
        picture = framed
    out = Path(path)
    with atomic_write(out) as tmp:
        picture.save(tmp, format="PNG")
    return out
