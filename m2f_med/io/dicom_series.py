"""Load one DICOM series as an m2f-med volume: a ``(1, X, Y, Z)`` float32 ``MetaTensor`` with a RAS affine.

The steps, each in its own module:

1. which files: a ``SeriesInfo`` from ``index_dicom_tree``/``select_series``, explicit paths, or a folder
   holding exactly one image series;
2. ``dicom_planes.planes_of``: one plane per image or per enhanced multi-frame frame; objects that are not
   part of the stack (SEG, RTSTRUCT, SR, localizers, RGB secondary captures, images without geometry) are
   excluded and each exclusion is noted in ``meta["problems"]``; planes whose orientation, size or pixel
   spacing differ from the largest group (scouts, reformats) are excluded the same way;
3. ``dicom_stack``: order by position along the slice normal (never InstanceNumber or file name), drop
   identical duplicates (noted), refuse conflicting ones, split at gaps over the gap limit (largest part
   kept, noted), detect gaps / variable spacing (resample or refuse, per ``on_nonuniform``) and gantry tilt
   (sheared affine, noted); a Siemens MOSAIC image is instead cut into its slices (``dicom_mosaic``);
4. ``dicom_pixels``: decode and rescale to float32 modality values (HU for CT).

The result follows the volume contract of ``docs/ARCHITECTURE.md``: X along the DICOM row direction, Y along
the column direction, Z along the slice normal; ``affine = diag(-1, -1, 1, 1) @ affine_lps``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from m2f_med.io.dicom_index import DicomIndex, SeriesInfo, index_dicom_tree, looks_like_dicom, sop_class_of
from m2f_med.io.dicom_mosaic import is_mosaic, split_mosaic
from m2f_med.io.dicom_pixels import decode_frames, modality_values
from m2f_med.io.dicom_planes import ImagePlane, planes_of
from m2f_med.io.dicom_stack import group_by_position, plan_stack
from m2f_med.io.dicom_vr import describe_overlong, overlong_values
from m2f_med.io.dicom_warnings import problems_with_pydicom_warnings
from m2f_med.io.errors import VolumeError
from m2f_med.io.series_selection import CHOOSE, AmbiguousSeriesError, NoSeriesError, series_exclusion
from m2f_med.io.volume import (
    FOR_UID,
    MODALITY,
    PROBLEMS,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_UIDS,
    SOURCE_FORMAT,
    SOURCE_PATHS,
    STUDY_UID,
    lps_to_ras_affine,
    make_volume,
)

if TYPE_CHECKING:  # MONAI takes seconds to import; make_volume imports it when it builds a MetaTensor
    from monai.data import MetaTensor

__all__ = ["FRAME_NUMBERS", "load_dicom_series", "series_paths"]

logger = logging.getLogger(__name__)

# Extra meta key: 1-based frame number within its SOP instance for each Z slice of an enhanced multi-frame
# image (what a DICOM-SEG's ReferencedFrameNumber needs); None for single-frame images and synthesised slices.
FRAME_NUMBERS = "FrameNumbers"

# Defer reading large elements (pixel data) until decoded, so excluded files cost only their header.
_DEFER_SIZE = "256 KB"


def _few(paths: Sequence[Path], k: int = 3) -> str:
    names = [p.name for p in paths[:k]]
    return ", ".join(names) + (f" and {len(paths) - k} more" if len(paths) > k else "")


def series_paths(series: SeriesInfo | Sequence[str | os.PathLike] | str | os.PathLike) -> tuple[list[Path], Path]:
    """The files of a series given as a ``SeriesInfo``, a folder, a file, or a sequence of files.

    Args:
        series: see ``load_dicom_series``.

    Returns:
        ``(paths, where)``: de-duplicated files in the given order, and the folder (the file, for a single
        file) to name in messages and in ``meta["filename_or_obj"]``.

    Raises:
        VolumeError: a path does not exist, or the sequence is empty.
        NoSeriesError: a folder without an image series.
        AmbiguousSeriesError: a folder with several image series (``candidates`` lists them).
    """
    if isinstance(series, SeriesInfo):
        paths = series.paths
    elif isinstance(series, (str, os.PathLike)):
        root = Path(series)
        if root.is_dir():
            return _single_series_in(index_dicom_tree(root)), root
        if not root.exists():
            raise VolumeError(root, "no such file or folder")
        paths = [root]
    else:
        paths = [Path(p) for p in series]
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = Path(p).resolve()
        if key not in seen:
            seen.add(key)
            unique.append(Path(p))
    if not unique:
        raise VolumeError(None, "no DICOM files given")
    for p in unique:
        if not p.is_file():
            raise VolumeError(p, "no such file")
    if len(unique) == 1:
        return unique, unique[0]
    parents = {p.parent for p in unique}
    where = parents.pop() if len(parents) == 1 else Path(os.path.commonpath([str(p) for p in unique]))
    return unique, where


def _single_series_in(index: DicomIndex) -> list[Path]:
    images = [s for s in index if series_exclusion(s, allow_derived=True) is None]
    if len(images) == 1:
        return images[0].paths
    listing = "\n".join(f"  {s.describe()}" for s in (images or index.series))
    if not images:
        raise NoSeriesError(index.root, f"no image series in this folder; found:\n{listing}")
    raise AmbiguousSeriesError(
        index.root,
        f"{len(images)} image series in this folder; {CHOOSE}:\n{listing}",
        candidates=images,
    )


def _read(path: Path) -> pydicom.Dataset:
    if not looks_like_dicom(path):
        raise VolumeError(path, "not a DICOM file (no DICM header)")
    try:
        return pydicom.dcmread(path, defer_size=_DEFER_SIZE, force=True)
    except Exception as e:  # corrupt files make pydicom raise many types; all mean "unreadable"
        raise VolumeError(path, f"not a readable DICOM file: {type(e).__name__}: {e}") from e


class _Pixels:
    """Decodes each file once and hands out float32 modality values per plane, ``(Rows, Columns)``."""

    def __init__(self):
        self._frames: dict[Path, np.ndarray] = {}

    def __call__(self, plane: ImagePlane) -> np.ndarray:
        frames = self._frames.get(plane.path)
        if frames is None:
            frames = self._frames[plane.path] = decode_frames(plane.ds, plane.path)
        return modality_values(frames[plane.frame], plane.ds, plane.slope, plane.intercept)


def _choose_stack(planes: list[ImagePlane], where: Path, problems: list[str]) -> list[ImagePlane]:
    stacks: list[list[ImagePlane]] = []
    for p in planes:
        home = next((st for st in stacks if st[0].same_grid(p)), None)
        if home is None:
            stacks.append([p])
        else:
            home.append(p)
    if len(stacks) == 1:
        return planes
    ranked = sorted(stacks, key=len, reverse=True)
    if len(ranked[0]) == len(ranked[1]):
        desc = "; ".join(
            f"{len(g)} images {g[0].columns}x{g[0].rows} orientation {np.round(g[0].orientation, 3).tolist()}"
            for g in ranked
        )
        raise VolumeError(where, f"the images form {len(ranked)} stacks and the largest are equal in size ({desc}): cannot tell which is the volume")
    others = [p for g in ranked[1:] for p in g]
    files = sorted({p.path for p in others})
    problems.append(
        f"excluded {len(others)} images with another orientation, size or pixel spacing (scout/localizer or "
        f"reformat): {_few(files)}"
    )
    return ranked[0]


def _drop_duplicates(stack: list[ImagePlane], pixels: _Pixels, where: Path, problems: list[str]) -> list[ImagePlane]:
    positions = np.stack([p.position for p in stack])
    _, groups = group_by_position(positions, stack[0].orientation, where)
    kept: list[ImagePlane] = []
    dropped = 0
    conflicts: list[list[ImagePlane]] = []
    for group in groups:
        members = sorted((stack[i] for i in group), key=lambda p: (p.sop_instance_uid, p.frame, str(p.path)))
        first = members[0]
        if len(members) > 1:
            ref = pixels(first)
            if all(np.array_equal(ref, pixels(m)) for m in members[1:]):
                dropped += len(members) - 1
            else:
                conflicts.append(members)
        kept.append(first)
    if conflicts:
        sizes = {len(g) for g in groups}
        if len(sizes) == 1 and len(groups) > 1:
            k = sizes.pop()
            raise VolumeError(
                where,
                f"{k} different images at each of {len(groups)} positions: the series holds {k} volumes "
                "(time points, echoes or phases); load the files of one volume",
            )
        g = conflicts[0]
        raise VolumeError(
            where,
            f"{len(g)} different images at the same position ({np.round(g[0].position, 2).tolist()} mm): "
            f"{_few(sorted({p.path for p in g}))}; conflicting duplicates, not one volume",
        )
    if dropped:
        problems.append(f"dropped {dropped} duplicate images (same position and same pixels)")
    return kept


@problems_with_pydicom_warnings
def load_dicom_series(
    series: SeriesInfo | Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    on_nonuniform: str = "resample",
) -> MetaTensor:
    """Load a DICOM image series (single-frame or enhanced multi-frame) as a volume.

    Args:
        series: a ``SeriesInfo`` (from ``index_dicom_tree`` / ``select_series``), a sequence of DICOM files
            of one series (any order, any names), a single file, or a folder holding exactly one image
            series (other objects such as RTSTRUCT or SEG may be there too).
        on_nonuniform: what to do with missing slices or variable slice spacing: ``"resample"`` (uniform
            grid along the stacking direction, noted in problems, ``SOPInstanceUIDs`` entry ``None`` for
            interpolated slices) or ``"error"``.

    Returns:
        ``MetaTensor`` ``(1, X, Y, Z)`` float32 (modality values: HU for CT; MONOCHROME1 inverted),
        ``.affine`` voxel -> RAS mm (sheared for gantry tilt, see ``dicom_stack``), and ``.meta`` with
        ``modality``, ``source_format="dicom"``, ``source_paths`` (files used, Z order), ``spacing_mm``,
        ``problems``, ``StudyInstanceUID``, ``SeriesInstanceUID``, ``FrameOfReferenceUID``,
        ``SOPInstanceUIDs`` (Z order), ``SOPClassUID``, ``FrameNumbers`` (see ``FRAME_NUMBERS``),
        ``BodyPartExamined`` (upper case, ``""`` if absent),
        ``filename_or_obj`` (the series folder; the file itself for a single file).

    Raises:
        VolumeError: unreadable file; no image to stack; two equally large stacks; conflicting duplicates
            (different pixels at one position, e.g. a 4D series); images not on one line; a gap wider than
            10 median gaps (``dicom_stack.REFUSE_GAP_FACTOR``) splitting the series into largest parts of equal
            size (unequal parts: the largest is loaded, the others named in ``problems``); non-uniform
            spacing with ``on_nonuniform="error"``; undecodable pixel data.
        DecoderMissingError: a compressed transfer syntax without an installed decoder (names the package).
        AmbiguousSeriesError / NoSeriesError: a folder with several / no image series.
        ValueError: ``on_nonuniform`` is not ``"resample"`` or ``"error"``.
    """
    if on_nonuniform not in ("resample", "error"):
        raise ValueError(f"on_nonuniform must be 'resample' or 'error', not {on_nonuniform!r}")
    paths, where = series_paths(series)
    problems: list[str] = []
    planes: list[ImagePlane] = []
    excluded: dict[str, list[Path]] = defaultdict(list)
    overlong: dict[Path, list] = {}
    for path in paths:
        ds = _read(path)
        if found_long := overlong_values(ds):
            overlong[path] = found_long
        found = planes_of(ds, path)
        problems.extend(found.notes)
        if found.excluded:
            excluded[found.excluded].append(path)
        planes.extend(found.planes)
    for reason, files in excluded.items():
        problems.append(f"excluded {len(files)} files ({reason}): {_few(files)}")
    if line := describe_overlong(overlong):
        problems.append(line)
    if not planes:
        why = "; ".join(f"{len(f)} {r}" for r, f in excluded.items())
        raise VolumeError(where, f"no image slices to stack ({why})")

    stack = _choose_stack(planes, where, problems)
    pixels = _Pixels()
    if is_mosaic(stack[0].ds):
        stack = _one_mosaic(stack, pixels, where, problems)
        data, affine_lps, sources = _mosaic_volume(stack[0], pixels, problems)
    else:
        stack = _split_at_wide_gap(_drop_duplicates(stack, pixels, where, problems), where, problems)
        data, affine_lps, sources = _stacked_volume(stack, pixels, where, problems, on_nonuniform)

    datasets = list({id(p.ds): p.ds for p in stack}.values())
    meta = _series_meta(datasets, problems)
    multi = any(int(p.ds.get("NumberOfFrames", 1) or 1) > 1 for p in stack)
    meta[SOP_UIDS] = [None if s is None else stack[s].sop_instance_uid for s in sources]
    meta[FRAME_NUMBERS] = [None if s is None or not multi else stack[s].frame + 1 for s in sources]
    used = list(dict.fromkeys(p.path for p in stack))
    meta[SOURCE_PATHS] = [str(p) for p in used]
    meta["filename_or_obj"] = str(where)
    vol = make_volume(data, lps_to_ras_affine(affine_lps), **meta)
    logger.info(
        "loaded DICOM series %s: %s voxels, spacing %s mm, %d problems",
        meta[SERIES_UID] or "(no SeriesInstanceUID)", tuple(data.shape), vol.meta["spacing_mm"], len(problems),
    )
    return vol


def _stacked_volume(stack, pixels, where, problems, on_nonuniform):
    """``(data (X, Y, Z) float32, affine_lps, sources)`` of a stack of distinct planes sorted along the normal:
    ``plan_stack`` (uniform grid, resampled where needed); ``sources[k]`` is the plane index of output slice
    k (``None``: interpolated)."""
    first = stack[0]
    if first.pixel_spacing is None:
        problems.append("PixelSpacing missing: 1 mm x 1 mm pixels assumed")
    layout = plan_stack(
        np.stack([p.position for p in stack]),
        first.orientation,
        first.pixel_spacing or (1.0, 1.0),
        single_slice_spacing=(first.slice_thickness, first.spacing_between_slices),
        on_nonuniform=on_nonuniform,
        where=where,
    )
    problems.extend(layout.problems)

    data = np.empty((first.columns, first.rows, layout.n_out), dtype=np.float32)
    if layout.resample is None:
        sources: list[int | None] = list(range(len(stack)))
        for k, plane in enumerate(stack):
            data[:, :, k] = pixels(plane).T
    else:
        plan = layout.resample
        sources = plan.source
        for m in range(layout.n_out):
            lo, hi, w = int(plan.lower[m]), int(plan.upper[m]), float(plan.weight[m])
            if lo == hi:
                data[:, :, m] = pixels(stack[lo]).T
            else:
                data[:, :, m] = ((1.0 - w) * pixels(stack[lo]) + w * pixels(stack[hi])).T

    return data, layout.affine_lps, sources


def _one_mosaic(stack: list[ImagePlane], pixels: _Pixels, where: Path, problems: list[str]) -> list[ImagePlane]:
    """The one Siemens MOSAIC image of a series, identical copies (same position and pixels) dropped (noted).

    Raises:
        VolumeError: several different mosaics (each is a whole volume, e.g. fMRI time points).
    """
    members = sorted(stack, key=lambda p: (p.sop_instance_uid, p.frame, str(p.path)))
    first = members[0]
    ref = pixels(first)
    different = [
        m for m in members[1:]
        if not (np.allclose(m.position, first.position) and np.array_equal(pixels(m), ref))
    ]
    if different:
        files = sorted({p.path for p in [first, *different]})
        raise VolumeError(
            where,
            f"{len(different) + 1} different Siemens MOSAIC images: each is a whole 3-D volume (e.g. fMRI time "
            f"points or DWI directions), not a slice; load one file ({_few(files)})",
        )
    if len(members) > 1:
        problems.append(f"dropped {len(members) - 1} duplicate images (same position and same pixels)")
    return [first]


def _mosaic_volume(plane: ImagePlane, pixels: _Pixels, problems: list[str]):
    """``(data (X, Y, Z) float32, affine_lps, sources)`` of one Siemens MOSAIC image cut into its slices
    (``dicom_mosaic.split_mosaic``); every slice's source is the mosaic instance (index 0)."""
    data, affine_lps = split_mosaic(plane.ds, pixels(plane), plane.path)
    problems.append(
        f"Siemens MOSAIC image split into {data.shape[2]} slices of {data.shape[0]}x{data.shape[1]} "
        "(NumberOfImagesInMosaic from the CSA header; geometry as nibabel's MosaicWrapper)"
    )
    return data.astype(np.float32, copy=False), affine_lps, [0] * data.shape[2]


def _split_at_wide_gap(stack: list[ImagePlane], where: Path, problems: list[str]) -> list[ImagePlane]:
    """The gap limit (``dicom_stack.REFUSE_GAP_FACTOR``): a series whose slices are separated by a gap wider
    than 10 median gaps is split there; the largest part is loaded and the others are named in ``problems``.
    Parts of equal size are refused (no way to tell which is meant).

    Args:
        stack: planes sorted along the slice normal, one per position (``_drop_duplicates``).
        where: the series path for messages.
        problems: appended to.

    Returns:
        The planes of the largest part (``stack`` itself when no gap is over the limit).

    Raises:
        VolumeError: the largest parts are equal in size.
    """
    from m2f_med.io.dicom_index import slice_normal
    from m2f_med.io.dicom_stack import REFUSE_GAP_FACTOR

    if len(stack) < 3:
        return stack
    d = np.array([p.position @ slice_normal(stack[0].orientation) for p in stack])
    gaps = np.diff(d)
    usual = float(np.median(gaps))
    cuts = [k + 1 for k in np.flatnonzero(gaps > REFUSE_GAP_FACTOR * usual)]
    if not cuts or usual <= 0:
        return stack
    parts = [stack[a:b] for a, b in zip([0, *cuts], [*cuts, len(stack)])]
    sizes = sorted((len(p) for p in parts), reverse=True)
    widest = float(gaps.max())
    if sizes[0] == sizes[1]:
        raise VolumeError(
            where,
            f"a gap of {widest:.1f} mm ({widest / usual:.0f}x the usual {usual:.2f} mm spacing, limit "
            f"{REFUSE_GAP_FACTOR:g}x) splits the series into {len(parts)} parts of which the largest are equal "
            f"({sizes[0]} slices each): load the files of one part",
        )
    keep = max(parts, key=len)
    left = [p for part in parts if part is not keep for p in part]
    problems.append(
        f"a gap of {widest:.1f} mm ({widest / usual:.0f}x the usual {usual:.2f} mm spacing, limit "
        f"{REFUSE_GAP_FACTOR:g}x) splits the series: kept the largest part ({len(keep)} slices), left out "
        f"{len(left)}: {_few(list(dict.fromkeys(p.path for p in left)))}"
    )
    return keep


def _series_meta(datasets: list[pydicom.Dataset], problems: list[str]) -> dict:
    def common(name: str) -> str:
        values = Counter(str(ds.get(name, "") or "") for ds in datasets)
        if len(values) > 1:
            problems.append(f"images differ in {name} ({len(values)} values); the most common is recorded")
        return values.most_common(1)[0][0]

    study, series = common("StudyInstanceUID"), common("SeriesInstanceUID")
    if not series:
        problems.append("the files have no SeriesInstanceUID (anonymised?)")
    classes = Counter(sop_class_of(ds) for ds in datasets)
    return {
        MODALITY: common("Modality").upper(),
        SOURCE_FORMAT: "dicom",
        STUDY_UID: study,
        SERIES_UID: series,
        FOR_UID: common("FrameOfReferenceUID"),
        SOP_CLASS_UID: classes.most_common(1)[0][0],
        # (0018,0015), PS3.16 CID 4031 terms (ABDOMEN, EXTREMITY, HEAD, ...): the QC's region check reads it
        "BodyPartExamined": str(datasets[0].get("BodyPartExamined", "") or "").upper(),
        PROBLEMS: problems,
    }
