"""Geometry of a stack of parallel DICOM image planes: order, duplicates, spacing, gantry tilt, affine.

Works on ImagePositionPatient (IPP) vectors only (LPS, mm; DICOM PS3.3 C.7.6.2.1.1); pixels are the
caller's. The conventions follow ``docs/ARCHITECTURE.md``:

* Planes are ordered by their distance along the slice normal ``n = row_cosine x column_cosine``
  (ascending), never by InstanceNumber or file name. With ``i`` along the row direction and ``j`` along the
  column direction this makes the voxel axes right-handed.
* The LPS affine has columns ``row_cosine * PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]``, the
  slice-step vector, and the first plane's IPP.
* **Gantry tilt** (planes stacked along a direction that is not their normal) is kept exact with a
  **sheared affine**: the slice-step vector is the real IPP difference between neighbouring planes, not
  ``n * spacing``. Every voxel keeps its true world position and no pixel is interpolated. NIfTI can hold
  this in its sform (nibabel writes it; the qform, which cannot shear, is then only an approximation);
  ITK/SimpleITK cannot represent a shear and orthogonalise such an image on reading.
* **Non-uniform spacing** (a missing slice, variable increments) is either refused or resampled onto a
  uniform grid along the stacking direction: ``n_out = round(span / median_gap) + 1`` planes spread evenly
  from the first to the last input plane (so both keep their exact positions). Output planes within the
  position tolerance of an input plane copy it exactly; the others are linear blends of the two
  neighbouring input planes, which for a tilted stack is interpolation along the tilted line on which
  voxel ``(i, j)`` of every plane lies. A gap wider than ``MAX_GAP_FACTOR`` times the median gap gets a
  WARNING in ``problems`` (more than three slices invented in a row, or two stacks bridged).
* **Gap limit**: a gap wider than ``REFUSE_GAP_FACTOR`` (10) times the median gap (nine or more slices
  missing in a row, e.g. 202 mm in a 4 mm series, which resampling would fill with 50 invented slices) is
  never filled, whatever ``on_nonuniform`` says: such a series is two stacks or has lost a block of slices,
  and no interpolated volume of it is trustworthy. ``load_dicom_series`` splits the series at such gaps
  first and keeps the part with the most slices (naming the rest in ``problems``; equal parts are a
  ``VolumeError``); ``plan_stack`` refuses any gap still over the limit as a backstop (e.g. a kept part whose
  own median gap is smaller). Every DICOM path (``load_dicom_series``, hence ``load_volume``, ``convert``,
  ``inspect``, ``predict``, the bundles' reader, napari) goes through here, so the rule is the same
  everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from m2f_med.io.dicom_index import slice_normal
from m2f_med.io.errors import VolumeError

__all__ = [
    "MAX_GAP_FACTOR",
    "REFUSE_GAP_FACTOR",
    "SAME_POSITION_MM",
    "StackLayout",
    "ResamplePlan",
    "group_by_position",
    "plan_stack",
    "position_tolerance_mm",
]

# Two planes whose IPPs differ by less than this (every coordinate) are at the same position.
SAME_POSITION_MM = 0.01

# Gaps wider than this many median gaps (4 = more than three missing slices) are flagged when filled.
MAX_GAP_FACTOR = 4.0

# Gaps wider than this many median gaps (9 or more slices missing in a row) are refused, never filled.
REFUSE_GAP_FACTOR = 10.0


def position_tolerance_mm(spacing_mm: float) -> float:
    """How far a plane may sit from the uniform grid and still count as on it: max(0.1 mm, 5 % of spacing).

    0.1 mm absorbs IPPs printed with one decimal; 5 % keeps a missing slice (half a spacing or more off the
    grid) and real spacing changes detectable.
    """
    return max(0.1, 0.05 * abs(spacing_mm))


@dataclass(frozen=True)
class ResamplePlan:
    """How to build each output plane from the (sorted, de-duplicated) input planes.

    Attributes:
        distances_mm: ``(M,)`` output plane distances along the normal.
        lower: ``(M,)`` index of the input plane at or below each output plane.
        upper: ``(M,)`` index of the input plane above (equal to ``lower`` for an exact copy).
        weight: ``(M,)`` weight of ``upper``: ``out = (1 - w) * in[lower] + w * in[upper]``.
        source: per output plane, the input index it copies exactly, or ``None`` if synthesised.
    """

    distances_mm: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    weight: np.ndarray
    source: list[int | None]


@dataclass
class StackLayout:
    """Result of ``plan_stack``.

    Attributes:
        affine_lps: ``(4, 4)`` voxel ``(i, j, k)`` -> LPS world (mm); sheared for a tilted stack.
        distances_mm: ``(N,)`` input plane distances along the normal (sorted, ascending).
        spacing_mm: slice spacing along the normal of the output grid.
        tilt_deg: angle between the stacking direction and the plane normal (0 for an orthogonal stack).
        resample: ``None`` if the input planes are already uniform (output plane k = input plane k).
        problems: notes for ``meta["problems"]`` (tilt, resampling, assumed spacing).
    """

    affine_lps: np.ndarray
    distances_mm: np.ndarray
    spacing_mm: float
    tilt_deg: float = 0.0
    resample: ResamplePlan | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def n_out(self) -> int:
        """Number of planes in the output volume."""
        return len(self.distances_mm) if self.resample is None else len(self.resample.distances_mm)


def group_by_position(
    positions: np.ndarray, orientation: Sequence[float], where=None
) -> tuple[np.ndarray, list[list[int]]]:
    """Sort planes along the normal and group those at the same position.

    Args:
        positions: ``(N, 3)`` IPPs (LPS, mm).
        orientation: the shared ImageOrientationPatient (6 cosines).
        where: path for error messages.

    Returns:
        ``(distances, groups)``: ``(N,)`` distance of every input plane along the normal, and the groups of
        input indices at one position (IPPs within ``SAME_POSITION_MM``), ordered by distance. Within a
        group, indices keep their input order.

    Raises:
        VolumeError: two planes at the same depth whose in-plane positions differ (two stacks side by side).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    d = pos @ slice_normal(orientation)
    order = np.argsort(d, kind="stable")
    groups: list[list[int]] = []
    for idx in order:
        if groups and abs(d[idx] - d[groups[-1][0]]) < SAME_POSITION_MM:
            if np.max(np.abs(pos[idx] - pos[groups[-1][0]])) >= SAME_POSITION_MM:
                raise VolumeError(
                    where,
                    f"two images at the same depth ({d[idx]:.2f} mm along the normal) are shifted in-plane "
                    f"by {np.linalg.norm(pos[idx] - pos[groups[-1][0]]):.2f} mm: not one stack",
                )
            groups[-1].append(int(idx))
        else:
            groups.append([int(idx)])
    return d, groups


def _resample_plan(d: np.ndarray, spacing: float) -> ResamplePlan:
    span = d[-1] - d[0]
    n_out = int(round(span / spacing)) + 1
    grid = d[0] + np.arange(n_out) * (span / (n_out - 1))
    tol = position_tolerance_mm(span / (n_out - 1))
    upper = np.clip(np.searchsorted(d, grid, side="left"), 1, len(d) - 1)
    lower = upper - 1
    weight = (grid - d[lower]) / (d[upper] - d[lower])
    source: list[int | None] = []
    for m, g in enumerate(grid):
        near = int(np.argmin(np.abs(d - g)))
        if abs(d[near] - g) <= tol:
            lower[m] = upper[m] = near
            weight[m] = 0.0
            source.append(near)
        else:
            source.append(None)
    return ResamplePlan(grid, lower, upper, np.clip(weight, 0.0, 1.0), source)


def plan_stack(
    positions: np.ndarray,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    *,
    single_slice_spacing: tuple[float | None, float | None] = (None, None),
    on_nonuniform: str = "resample",
    where=None,
) -> StackLayout:
    """Work out the voxel grid of a stack of distinct, parallel planes already sorted along the normal.

    Args:
        positions: ``(N, 3)`` IPPs (LPS, mm), sorted by ``group_by_position``, one per position.
        orientation: ImageOrientationPatient (6 cosines) shared by all planes.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm.
        single_slice_spacing: ``(SliceThickness, SpacingBetweenSlices)`` for a one-plane stack, which has no
            position difference to measure; the first that is positive is used, else 1 mm (noted).
        on_nonuniform: ``"resample"`` (uniform grid, see module docstring) or ``"error"``.
        where: path for error messages.

    Returns:
        ``StackLayout`` with the LPS affine, tilt and (if needed) the resampling plan.

    Raises:
        VolumeError: planes not on one straight line (variable tilt or several stacks), a gap wider than
            ``REFUSE_GAP_FACTOR`` median gaps (gap limit), non-uniform spacing with ``on_nonuniform="error"``.
        ValueError: ``on_nonuniform`` is not ``"resample"`` or ``"error"``.
    """
    if on_nonuniform not in ("resample", "error"):
        raise ValueError(f"on_nonuniform must be 'resample' or 'error', not {on_nonuniform!r}")
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    iop = np.asarray(orientation, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    n = slice_normal(iop)
    ps_row, ps_col = float(pixel_spacing[0]), float(pixel_spacing[1])
    d = pos @ n
    problems: list[str] = []

    def affine(step: np.ndarray) -> np.ndarray:
        a = np.eye(4)
        a[:3, 0] = row * ps_col  # i runs along a row: successive columns, PixelSpacing[1] apart
        a[:3, 1] = col * ps_row  # j runs down a column: successive rows, PixelSpacing[0] apart
        a[:3, 2] = step
        a[:3, 3] = pos[0]
        return a

    if len(pos) == 1:
        thickness, between = single_slice_spacing
        spacing = next((float(v) for v in (thickness, between) if v is not None and float(v) > 0), None)
        if spacing is None:
            spacing = 1.0
            problems.append("single slice without SliceThickness or SpacingBetweenSlices: 1 mm slice spacing assumed")
        return StackLayout(affine(n * spacing), d, spacing, problems=problems)

    if np.any(np.diff(d) <= 0):
        raise ValueError("positions must be sorted along the normal and distinct (use group_by_position)")

    # In-plane drift of each plane relative to the first: zero for an orthogonal stack, proportional to
    # depth for a constant gantry tilt (shear per mm of depth = s).
    along = d - d[0]
    inplane = (pos - pos[0]) - np.outer(along, n)
    s = (along @ inplane) / (along @ along)
    off_line = np.linalg.norm(inplane - np.outer(along, s), axis=1)
    min_pixel = min(ps_row, ps_col)
    if off_line.max() > 0.5 * min_pixel:
        raise VolumeError(
            where,
            f"the images are not stacked along one straight line (an image lies {off_line.max():.2f} mm "
            "off it): variable gantry tilt, or several stacks in one series",
        )
    drift = np.linalg.norm(s) * along[-1]
    tilted = drift > 0.1 * min_pixel  # a tenth of a pixel over the whole stack: below that, orthogonal
    u = n + s if tilted else n  # world displacement per mm of depth
    tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(s)))) if tilted else 0.0
    if tilted:
        problems.append(
            f"gantry tilt {tilt_deg:.2f} deg: kept exact with a sheared affine (slice step = real IPP "
            "difference); NIfTI qform and ITK readers cannot hold the shear"
        )

    spacing = along[-1] / (len(d) - 1)
    deviation = np.abs(along - spacing * np.arange(len(d)))
    if deviation.max() <= position_tolerance_mm(spacing):
        return StackLayout(affine(u * spacing), d, float(spacing), tilt_deg, None, problems)

    gaps = np.diff(d)
    summary = _gap_summary(gaps)
    target = float(np.median(gaps))
    k = int(np.argmax(gaps))
    if gaps[k] > REFUSE_GAP_FACTOR * target:
        raise VolumeError(
            where,
            f"a gap of {gaps[k]:.1f} mm between the slices at {along[k]:.1f} and {along[k + 1]:.1f} mm (from the "
            f"first) is {gaps[k] / target:.0f}x the usual {target:.2f} mm spacing (limit {REFUSE_GAP_FACTOR:g}x): "
            f"two stacks or a lost block of slices, which would be filled with "
            f"{int(round(gaps[k] / target)) - 1} invented slices; load the files on each side separately",
        )
    if on_nonuniform == "error":
        raise VolumeError(
            where,
            f"slice spacing is not uniform ({summary}): missing slices or variable increments; "
            "load with on_nonuniform='resample' to interpolate onto a uniform grid",
        )
    plan = _resample_plan(d, target)
    out_spacing = float(plan.distances_mm[1] - plan.distances_mm[0])
    n_new = sum(src is None for src in plan.source)
    if gaps.max() > MAX_GAP_FACTOR * target:
        problems.append(
            f"WARNING: a gap of {gaps.max():.1f} mm is {gaps.max() / target:.0f}x the usual {target:.2f} mm "
            "spacing: more than three slices missing in a row, or two stacks in one series; the slices "
            "filled in there are interpolated across a wide gap (load with on_nonuniform='error' to refuse)"
        )
    problems.append(
        f"non-uniform slice spacing ({summary}) resampled to a uniform {out_spacing:.3f} mm grid: "
        f"{len(plan.distances_mm)} slices from {len(d)}, {n_new} interpolated (SOPInstanceUID None)"
    )
    return StackLayout(affine(u * out_spacing), d, out_spacing, tilt_deg, plan, problems)


def _gap_summary(gaps: np.ndarray) -> str:
    values, counts = np.unique(np.round(gaps, 2), return_counts=True)
    parts = [f"{c}x {v:g} mm" for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])[:4]]
    more = f", {len(values) - 4} more" if len(values) > 4 else ""
    return "gaps " + ", ".join(parts) + more
