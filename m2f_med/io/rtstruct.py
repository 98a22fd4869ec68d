"""RT Structure Set (RTSTRUCT) contours → label map on a reference volume's grid.

Contours are placed by world position, not by the SOP Instance UIDs they reference (real RTSTRUCTs often
reference instances that are missing, e.g. after cropping), so the reference may be any volume in the same
frame of reference, DICOM or NIfTI. For each CLOSED_PLANAR contour (DICOM PS3.3 C.8.8.6, ROI Contour
Module) the points (LPS mm) are converted to RAS and through the inverse affine to voxel coordinates. The
voxel axis along which the contour is flat is its slice axis; the contour is assigned to the nearest slice
if it lies within ``z_tolerance_mm`` of it (default: half the slice spacing) and filled there with
``skimage.draw.polygon`` (pixel centres inside the polygon). Contours in the same plane are combined by XOR,
the standard encoding of holes; contours from different planes that land on one slice are combined by OR.

Label ids are 1..N in the order of the StructureSetROISequence; where ROIs overlap, the smaller ROI (fewer
voxels) is painted last and wins, so a tumour inside an organ stays visible. Everything skipped (point or
open contours, contours off the slice planes or outside the volume, overlaps) is noted in
``meta["problems"]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from m2f_med.io.errors import VolumeError
from m2f_med.io.volume import (
    FOR_UID,
    LPS_TO_RAS,
    MODALITY,
    SERIES_UID,
    SOURCE_FORMAT,
    SOURCE_PATHS,
    STUDY_UID,
    make_volume,
)

__all__ = ["RoiMask", "load_rtstruct", "rtstruct_masks"]

_PLANARITY_TOL_MM = 0.5


@dataclass
class RoiMask:
    """One rasterised ROI of an RTSTRUCT.

    Attributes:
        number: the ROINumber in the file.
        name: the ROIName.
        mask: bool array ``(X, Y, Z)`` on the reference grid.
        problems: what was skipped for this ROI, in words.
    """

    number: int
    name: str
    mask: np.ndarray
    problems: list[str] = field(default_factory=list)


def rtstruct_masks(
    path: str | os.PathLike,
    reference: torch.Tensor,
    *,
    z_tolerance_mm: float | None = None,
    fill: str = "centre",
) -> list[RoiMask]:
    """Rasterise every ROI of an RTSTRUCT onto a reference grid, one boolean mask per ROI (overlaps kept).

    Args:
        path: the RTSTRUCT file.
        reference: volume ``(C, X, Y, Z)`` with an RAS affine (mm); only its grid and
            ``meta["FrameOfReferenceUID"]`` (if any) are used.
        z_tolerance_mm: how far (mm, along the slice normal) a contour may lie from a slice centre and still
            be drawn on it; default half the slice spacing (nearest slice).
        fill: ``"centre"`` (default) fills the pixels whose centres lie inside the polygon (unbiased volume;
            the rule of plastimatch and mirp/IBSI). ``"boundary"`` also sets every pixel the contour line
            passes through, like OpenCV's ``fillPoly`` used by rt-utils (about half a pixel ring larger).

    Returns:
        ``RoiMask`` per ROI, in StructureSetROISequence order.

    Raises:
        VolumeError: not an RTSTRUCT, no ROI, a frame of reference that differs from the reference's, or no
            contour at all falls inside the reference volume (wrong reference).
        ValueError: ``fill`` is not ``"centre"`` or ``"boundary"``.

    See Also:
        DICOM PS3.3 C.8.8.5 (Structure Set Module), C.8.8.6 (ROI Contour Module);
        ``skimage.draw.polygon``.
    """
    from skimage.draw import polygon

    if fill not in ("centre", "boundary"):
        raise ValueError(f"fill must be 'centre' or 'boundary', got {fill!r}")
    p, ds = _read_rtstruct(path)
    shape = tuple(int(s) for s in reference.shape[-3:])
    affine = np.asarray(torch.as_tensor(reference.affine, dtype=torch.float64).cpu().numpy())
    inv = np.linalg.inv(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ref_for = str(getattr(reference, "meta", {}).get(FOR_UID) or "")

    rois = list(ds.get("StructureSetROISequence", []))
    if not rois:
        raise VolumeError(p, "the RTSTRUCT has no ROIs (StructureSetROISequence is empty)")
    contours_by_roi = {
        int(item.ReferencedROINumber): list(item.get("ContourSequence", []))
        for item in ds.get("ROIContourSequence", [])
        if "ReferencedROINumber" in item
    }
    results: list[RoiMask] = []
    drawn_any = False
    for roi in rois:
        number, name = int(roi.ROINumber), str(roi.get("ROIName", f"ROI {roi.ROINumber}"))
        roi_for = str(roi.get("ReferencedFrameOfReferenceUID", "") or "")
        if ref_for and roi_for and roi_for != ref_for:
            raise VolumeError(
                p, f"ROI {name!r} is in frame of reference {roi_for}, the reference volume in {ref_for}"
            )
        mask = np.zeros(shape, dtype=bool)
        skipped: dict[str, int] = {}
        planes: dict[tuple[int, int, float], np.ndarray] = {}  # (axis, slice, plane position) -> XOR fill
        for contour in contours_by_roi.get(number, []):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
            pts = _contour_points(contour)
            if kind != "CLOSED_PLANAR" or len(pts) < 3:
                skipped[f"{kind.lower()} contours"] = skipped.get(f"{kind.lower()} contours", 0) + 1
                continue
            vox = (inv @ (LPS_TO_RAS @ np.c_[pts, np.ones(len(pts))].T))[:3].T  # (N, 3) voxel coordinates
            extent_mm = np.ptp(vox, axis=0) * spacing
            axis = int(np.argmin(extent_mm))
            if extent_mm[axis] > _PLANARITY_TOL_MM:
                skipped["contours not parallel to the slices"] = skipped.get("contours not parallel to the slices", 0) + 1
                continue
            pos = float(vox[:, axis].mean())
            k = int(np.rint(pos))
            tol = z_tolerance_mm if z_tolerance_mm is not None else 0.5 * spacing[axis]
            if abs(pos - k) * spacing[axis] > tol + 1e-6:
                skipped["contours between slices"] = skipped.get("contours between slices", 0) + 1
                continue
            if not 0 <= k < shape[axis]:
                skipped["contours outside the volume"] = skipped.get("contours outside the volume", 0) + 1
                continue
            a, b = [d for d in range(3) if d != axis]
            rr, cc = polygon(vox[:, a], vox[:, b], shape=(shape[a], shape[b]))
            key = (axis, k, round(pos, 3))
            plane = planes.setdefault(key, np.zeros((shape[a], shape[b]), dtype=bool))
            inside = np.zeros_like(plane)
            inside[rr, cc] = True
            if fill == "boundary":
                er, ec = _edge_pixels(vox[:, a], vox[:, b], inside.shape)
                inside[er, ec] = True
            plane ^= inside
        for (axis, k, _), plane in planes.items():
            index = [slice(None)] * 3
            index[axis] = k
            mask[tuple(index)] |= plane
        drawn_any |= bool(planes)
        problems = [f"ROI {name!r}: {n} {what} skipped" for what, n in skipped.items()]
        if not mask.any():
            problems.append(f"ROI {name!r} has no contour on the reference grid (empty)")
        results.append(RoiMask(number, name, mask, problems))
    if not drawn_any:
        raise VolumeError(p, "no contour of the RTSTRUCT falls inside the reference volume; is it the right reference?")
    return results


def load_rtstruct(
    path: str | os.PathLike,
    reference: torch.Tensor,
    *,
    z_tolerance_mm: float | None = None,
    fill: str = "centre",
) -> tuple[MetaTensor, dict[int, str]]:
    """Load an RTSTRUCT as a label map on the grid of ``reference``, one label per ROI.

    Args:
        path: the RTSTRUCT file.
        reference: volume ``(C, X, Y, Z)`` with an RAS affine (mm), DICOM or NIfTI, in the RTSTRUCT's frame
            of reference.
        z_tolerance_mm: see ``rtstruct_masks``.
        fill: ``"centre"`` or ``"boundary"``; see ``rtstruct_masks``.

    Returns:
        ``(label, names)``: ``label`` is a ``(1, X, Y, Z)`` uint8 (uint16 above 255 ROIs) ``MetaTensor``
        with the reference's affine; ``names`` maps label id (1..N, StructureSetROISequence order) to
        ROIName. Overlaps are resolved smallest-ROI-wins and counted in ``meta["problems"]``.

    Raises:
        VolumeError: see ``rtstruct_masks``.
    """
    import pydicom

    rois = rtstruct_masks(path, reference, z_tolerance_mm=z_tolerance_mm, fill=fill)
    shape = rois[0].mask.shape
    dtype = np.uint8 if len(rois) <= 255 else np.uint16
    label = np.zeros(shape, dtype=dtype)
    problems = [msg for roi in rois for msg in roi.problems]
    sizes = [int(roi.mask.sum()) for roi in rois]
    seen, multi = np.zeros(shape, bool), np.zeros(shape, bool)
    for roi in rois:
        multi |= seen & roi.mask
        seen |= roi.mask
    overlap = int(np.count_nonzero(multi))
    if overlap:
        problems.append(f"{overlap} voxels lie in several ROIs; the smallest ROI was kept")
    for idx in sorted(range(len(rois)), key=lambda i: -sizes[i]):  # largest first, smallest painted last
        label[rois[idx].mask] = idx + 1
    names = {i + 1: roi.name for i, roi in enumerate(rois)}
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SeriesInstanceUID", "StudyInstanceUID"])
    affine = np.asarray(torch.as_tensor(reference.affine, dtype=torch.float64).cpu().numpy())
    ref_meta = getattr(reference, "meta", {})
    return (
        make_volume(
            label,
            affine,
            **{
                MODALITY: "RTSTRUCT",
                SOURCE_FORMAT: "rtstruct",
                SOURCE_PATHS: [str(path)],
                SERIES_UID: str(ds.get("SeriesInstanceUID", "")),
                STUDY_UID: str(ds.get("StudyInstanceUID", "")),
                FOR_UID: str(ref_meta.get(FOR_UID) or ""),
                "problems": problems,
            },
        ),
        names,
    )


def _read_rtstruct(path: str | os.PathLike):
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise VolumeError(p, "file not found")
    try:
        ds = pydicom.dcmread(p, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise VolumeError(p, f"not a readable DICOM file ({err})") from None
    if ds.get("Modality") != "RTSTRUCT" and "StructureSetROISequence" not in ds:
        raise VolumeError(p, f"not an RT Structure Set (Modality {ds.get('Modality', 'missing')!r})")
    return p, ds


def _contour_points(contour) -> np.ndarray:
    """ContourData as an ``(N, 3)`` float64 array (LPS mm), parsed from the raw bytes when possible."""
    from pydicom.dataelem import RawDataElement

    raw = contour.get_item("ContourData") if "ContourData" in contour else None
    if isinstance(raw, RawDataElement) and raw.value:
        try:  # pydicom's DS objects are slow for lung contours with thousands of points
            return np.array(raw.value.strip(b"\x00 ").split(b"\\"), dtype=np.float64).reshape(-1, 3)
        except ValueError:
            pass
    return np.asarray(contour.get("ContourData", []), dtype=np.float64).reshape(-1, 3)


def _edge_pixels(r: np.ndarray, c: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels on the closed polyline through ``(r, c)``: vertices rounded to pixel centres, as OpenCV does,
    and each edge sampled every <= 0.5 pixel."""
    r0, c0 = np.rint(r), np.rint(c)
    r1, c1 = np.roll(r, -1), np.roll(c, -1)
    n = np.ceil(2 * np.maximum(np.abs(r1 - r0), np.abs(c1 - c0))).astype(np.int64) + 1
    seg = np.repeat(np.arange(len(r)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(np.maximum(n - 1, 1), n)
    rr = np.rint(r0[seg] + t * (r1 - r0)[seg]).astype(np.int64)
    cc = np.rint(c0[seg] + t * (c1 - c0)[seg]).astype(np.int64)
    ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
    return rr[ok], cc[ok]
