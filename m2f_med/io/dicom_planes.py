"""Image planes of DICOM datasets: one per single-frame image, one per frame of an enhanced multi-frame image.

Each plane carries what stacking needs: ImagePositionPatient, ImageOrientationPatient, PixelSpacing, the
rescale, and where its pixels are. For enhanced multi-frame images (Enhanced CT/MR/PET, PS3.3 C.7.6.16)
these come from the Per-Frame or Shared Functional Groups Sequence: PlanePositionSequence,
PlaneOrientationSequence, PixelMeasuresSequence, PixelValueTransformationSequence (PS3.3 C.7.6.16.2).

``planes_of(ds, path)`` also decides which objects are not part of an image stack (SEG, RTSTRUCT, SR,
localizers, colour screenshots, images without geometry) and says why, for ``meta["problems"]``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from m2f_med.io.dicom_index import sop_class_kind, sop_class_of, sop_instance_of

__all__ = ["SAME_ORIENTATION", "ImagePlane", "PlaneSet", "planes_of"]

# Direction cosines closer than this are one orientation (vendors print 4 to 16 decimals; 1e-3 is 0.06 deg).
SAME_ORIENTATION = 1e-3

_IN_STACK_POSITION = Tag("InStackPositionNumber")
_IMAGE_POSITION = Tag("ImagePositionPatient")


@dataclass
class ImagePlane:
    """One 2D image with its geometry.

    Attributes:
        path: the file.
        frame: frame index within the file (0 for single-frame images).
        sop_instance_uid: SOPInstanceUID of the file (shared by all frames of a multi-frame image).
        position: ``(3,)`` ImagePositionPatient, LPS mm.
        orientation: ``(6,)`` ImageOrientationPatient (row cosines, column cosines).
        pixel_spacing: ``(row spacing, column spacing)`` mm, or ``None`` if absent.
        rows: Rows.
        columns: Columns.
        slope: RescaleSlope of this frame (``None``: the dataset's own / identity).
        intercept: RescaleIntercept of this frame (``None`` likewise).
        slice_thickness: SliceThickness mm or ``None``.
        spacing_between_slices: SpacingBetweenSlices mm or ``None``.
        ds: the dataset (pixels decoded on demand).
    """

    path: Path
    frame: int
    sop_instance_uid: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slope: float | None
    intercept: float | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    ds: Dataset

    def same_grid(self, other: ImagePlane) -> bool:
        """True if both planes can share one voxel grid: same size, pixel spacing (within 1e-4 relative) and
        orientation (cosines within ``SAME_ORIENTATION``)."""
        if (self.rows, self.columns) != (other.rows, other.columns):
            return False
        if (self.pixel_spacing is None) != (other.pixel_spacing is None):
            return False
        if self.pixel_spacing is not None and not np.allclose(self.pixel_spacing, other.pixel_spacing, rtol=1e-4):
            return False
        return bool(np.abs(self.orientation - other.orientation).max() < SAME_ORIENTATION)


@dataclass
class PlaneSet:
    """``planes_of`` result: the usable planes, or why the object is not part of a stack.

    Attributes:
        planes: usable planes (empty when excluded).
        excluded: reason the whole object was excluded (``"RTSTRUCT"``, ``"localizer"``, ...) or ``None``.
        notes: problems noticed while reading (frames of other stacks ignored, ...).
    """

    planes: list[ImagePlane]
    excluded: str | None = None
    notes: tuple[str, ...] = ()


def _float(v) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _floats(v, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(x) for x in v], dtype=np.float64) if v is not None else None
    except (TypeError, ValueError):
        return None
    return arr if arr is not None and arr.shape == (n,) else None


def _as_list(v) -> list:
    """A DICOM value as a list: pydicom returns one value (VM 1, e.g. a single DimensionIndexValues) bare,
    several as a ``MultiValue``; absent / empty gives ``[]``."""
    if v is None or v == "":
        return []
    if isinstance(v, (str, bytes, int, float)):
        return [v]
    try:
        return list(v)
    except TypeError:
        return [v]


def _group(frame: Dataset | None, shared: Dataset | None, name: str) -> Dataset | None:
    """First item of a functional group macro, per-frame value preferred over shared (PS3.3 C.7.6.16)."""
    for src in (frame, shared):
        if src is not None and name in src and src[name].value:
            return src[name].value[0]
    return None


def _frame_type(frame: Dataset | None, shared: Dataset | None) -> tuple[str, ...]:
    for name in ("CTImageFrameTypeSequence", "MRImageFrameTypeSequence", "PETFrameTypeSequence"):
        item = _group(frame, shared, name)
        if item is not None and "FrameType" in item:
            return tuple(str(v) for v in item.FrameType)
    return ()


def _volume_key(ds: Dataset, frame: Dataset | None, shared: Dataset | None) -> tuple:
    """Frames of one volume share this key: the non-spatial dimension index values and the FrameType.

    Dimension indices that only number the position in the stack are dropped, so what is left separates
    echoes, time points, stacks and image types (e.g. a Philips field map's magnitude and Hz frames).
    """
    key: list[int] = []
    fc = _group(frame, None, "FrameContentSequence")
    values = _as_list(fc.get("DimensionIndexValues")) if fc is not None else []
    pointers = [Tag(p) for item in ds.get("DimensionIndexSequence") or []
                for p in _as_list(item.get("DimensionIndexPointer"))[:1]]
    if len(pointers) == len(values):  # without the DimensionIndexSequence the values cannot be interpreted
        key = [int(v) for v, ptr in zip(values, pointers) if ptr not in (_IN_STACK_POSITION, _IMAGE_POSITION)]
    return (tuple(key), _frame_type(frame, shared))


def _enhanced_planes(ds: Dataset, path: Path, uid: str) -> PlaneSet:
    per_frame = ds.PerFrameFunctionalGroupsSequence
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    rows, cols = int(ds.Rows), int(ds.Columns)
    groups: dict[tuple, list[ImagePlane]] = defaultdict(list)
    for f, item in enumerate(per_frame):
        pos_item = _group(item, shared, "PlanePositionSequence")
        ori_item = _group(item, shared, "PlaneOrientationSequence")
        pos = _floats(pos_item.get("ImagePositionPatient"), 3) if pos_item is not None else None
        ori = _floats(ori_item.get("ImageOrientationPatient"), 6) if ori_item is not None else None
        if pos is None or ori is None:
            return PlaneSet([], "enhanced multi-frame image without PlanePosition/PlaneOrientation functional groups")
        meas = _group(item, shared, "PixelMeasuresSequence")
        pvt = _group(item, shared, "PixelValueTransformationSequence")
        ps = _floats(meas.get("PixelSpacing"), 2) if meas is not None else None
        groups[_volume_key(ds, item, shared)].append(
            ImagePlane(
                path=path,
                frame=f,
                sop_instance_uid=uid,
                position=pos,
                orientation=ori,
                pixel_spacing=None if ps is None else (float(ps[0]), float(ps[1])),
                rows=rows,
                columns=cols,
                slope=_float(pvt.get("RescaleSlope")) if pvt is not None else _float(ds.get("RescaleSlope")),
                intercept=_float(pvt.get("RescaleIntercept")) if pvt is not None else _float(ds.get("RescaleIntercept")),
                slice_thickness=_float(meas.get("SliceThickness")) if meas is not None else None,
                spacing_between_slices=_float(meas.get("SpacingBetweenSlices")) if meas is not None else None,
                ds=ds,
            )
        )
    keys = sorted(groups)
    notes: tuple[str, ...] = ()
    if len(keys) > 1:
        first = groups[keys[0]]
        ftype = "\\".join(keys[0][1]) or "?"
        notes = (
            f"{path.name}: multi-frame image holds {len(keys)} frame groups (echoes, time points, stacks or "
            f"image types); loaded the first ({len(first)} frames, FrameType {ftype}), ignored "
            f"{sum(len(groups[k]) for k in keys[1:])} frames",
        )
    return PlaneSet(groups[keys[0]], None, notes)


def planes_of(ds: Dataset, path: Path) -> PlaneSet:
    """The image planes of one DICOM object, or the reason it is not part of an image stack.

    Args:
        ds: the dataset (pixel data may be deferred; it is not decoded here).
        path: its file.

    Returns:
        ``PlaneSet``. Excluded: non-image SOP classes (SEG, RTSTRUCT, RTDOSE, SR, ...), objects without
        pixel data, colour images (RGB secondary captures), LOCALIZER images, multi-frame images without
        per-frame geometry, and images without ImagePositionPatient / ImageOrientationPatient.
    """
    kind = sop_class_kind(sop_class_of(ds))
    if kind not in ("image", "secondary_capture"):
        return PlaneSet([], kind)
    sc = " secondary capture" if kind == "secondary_capture" else ""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return PlaneSet([], f"{sc.strip() or 'object'} without pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        return PlaneSet([], "pixel data without Rows/Columns")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return PlaneSet([], f"colour (RGB){sc} image")
    image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return PlaneSet([], "localizer")
    uid = sop_instance_of(ds)
    if "PerFrameFunctionalGroupsSequence" in ds:
        try:
            return _enhanced_planes(ds, path, uid)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
            # a malformed functional group must end as a reason, not a traceback
            return PlaneSet([], f"enhanced multi-frame image with unreadable functional groups ({type(e).__name__}: {e})")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return PlaneSet([], "multi-frame image without per-frame geometry (functional groups)")
    pos = _floats(ds.get("ImagePositionPatient"), 3)
    ori = _floats(ds.get("ImageOrientationPatient"), 6)
    if pos is None or ori is None:
        return PlaneSet([], f"{sc.strip() or 'image'} without ImagePositionPatient/ImageOrientationPatient")
    ps = _floats(ds.get("PixelSpacing"), 2)
    plane = ImagePlane(
        path=path,
        frame=0,
        sop_instance_uid=uid,
        position=pos,
        orientation=ori,
        pixel_spacing=None if ps is None else (float(ps[0]), float(ps[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=None,
        intercept=None,
        slice_thickness=_float(ds.get("SliceThickness")),
        spacing_between_slices=_float(ds.get("SpacingBetweenSlices")),
        ds=ds,
    )
    return PlaneSet([plane])
