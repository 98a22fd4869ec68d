"""Quality control of predicted lesions: per lesion a verdict with reasons, and a scan-level check of the input.

A lesion model is only validated on inputs like its training data. The bundle declares that data's extent
(bundle key ``lesion_qc``, :class:`LesionQCSettings`); every lesion then gets ``qc`` = ``"ok"``, ``"check"``
(look before trusting it) or ``"fail"`` (not a lesion as the model was trained to find), with
``qc_reasons``:

* **input larger than the training crops**: the scan's field of view (:func:`field_of_view_mm`: the
  extent along the grid's own axes nearest to left-right or anterior-posterior, mm) exceeds
  ``max_field_of_view_mm`` → ``check`` on every lesion and a
  scan-level warning. A model trained on tumour-centred crops has never seen most of a whole CT's anatomy;
  its false positives there are unmeasured (the sarcoma bundle's local LUNG1-001 check found ones over 1 L);
* **volume above any training lesion**: ``volume_ml > max_volume_ml`` → ``check``;
* **mean HU outside solid or fatty soft tissue** (CT only): a mean below ``hu_mean_range[0]`` is mostly air
  or lung, above ``hu_mean_range[1]`` mostly bone or contrast medium → ``fail``. The default -150..+200 HU
  spans fat (about -100 HU) to enhancing soft tissue: unenhanced soft tissues lie at about +20..+65 HU
  (Lamba R. et al. AJR 2014;203:1013-1020) and portal-phase enhancement adds about +50..+100 HU (Bae K.T.
  Radiology 2010;256:32-61), the references of :mod:`m2f_med.inference.qc`. A lipomatous tumour can be near
  fat; a calcified one can exceed the upper bound, so a bundle may widen the range;
* **outside the body**: more than ``outside_body_fail`` (default 20 %) of the voxels outside the patient
  (:func:`body_parts_mask`: every sizeable body part above -300 HU, limbs included, not the table) → ``fail``;
* **low score**: below ``low_score`` → ``check`` (the same threshold as the ``low_confidence`` flag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LesionQCSettings", "body_parts_mask", "field_of_view_mm", "lesion_quality_control"]


@dataclass(frozen=True)
class LesionQCSettings:
    """What a lesion model's training data covered (bundle key ``lesion_qc``).

    Attributes:
        max_field_of_view_mm: largest left-right / anterior-posterior extent (mm) of a training image;
            ``None``: no field-of-view check.
        max_volume_ml: largest training lesion (mL), with any margin the bundle wants; ``None``: no check.
        hu_mean_range: ``(low, high)`` HU a lesion's mean must lie in (CT only); ``None``: no check.
        outside_body_fail: share of voxels outside the body above which a lesion fails.
        low_score: lesion score below which it gets ``check``.
    """

    max_field_of_view_mm: float | None = None
    max_volume_ml: float | None = None
    hu_mean_range: tuple[float, float] | None = (-150.0, 200.0)
    outside_body_fail: float = 0.2
    low_score: float = 0.7

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | None, low_score: float | None = None) -> LesionQCSettings:
        """Settings from a bundle's ``lesion_qc`` mapping.

        Raises:
            ValueError: unknown keys, ``hu_mean_range`` not two numbers ``low < high``, a limit that is not a
                positive number, or ``outside_body_fail`` / ``low_score`` not a number in ``[0, 1]``.
        """
        spec = dict(spec or {})
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown lesion_qc keys {sorted(unknown)}; use {sorted(cls.__dataclass_fields__)}")

        def number(key: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"lesion_qc {key} must be a number, got {value!r}")
            return float(value)

        if spec.get("hu_mean_range") is not None:
            rng = spec["hu_mean_range"]
            if isinstance(rng, (str, bytes)) or not isinstance(rng, Sequence) or len(rng) != 2:
                raise ValueError(f"lesion_qc hu_mean_range must be [low, high] HU, got {rng!r}")
            lo, hi = (number("hu_mean_range", v) for v in rng)
            if not lo < hi:
                raise ValueError(f"lesion_qc hu_mean_range must be [low, high] with low < high, got {[lo, hi]}")
            spec["hu_mean_range"] = (lo, hi)
        for key in ("max_field_of_view_mm", "max_volume_ml"):
            if spec.get(key) is not None:
                spec[key] = number(key, spec[key])
                if spec[key] <= 0:
                    raise ValueError(f"lesion_qc {key} must be positive, got {spec[key]}")
        if low_score is not None and "low_score" not in spec:
            spec["low_score"] = float(low_score)
        for key in ("outside_body_fail", "low_score"):
            if key in spec:
                spec[key] = number(key, spec[key])
                if not 0.0 <= spec[key] <= 1.0:
                    raise ValueError(f"lesion_qc {key} is a fraction in [0, 1], got {spec[key]}")
        return cls(**spec)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (written into ``instances.json`` as ``qc_settings``)."""
        d = asdict(self)
        d["hu_mean_range"] = list(self.hu_mean_range) if self.hu_mean_range is not None else None
        return d


def field_of_view_mm(shape: Sequence[int], affine: np.ndarray) -> tuple[float, float, float]:
    """The grid's field of view (mm) along its own axes, ordered by the world axis each is nearest to.

    Each voxel axis spans ``shape[i] x spacing[i]`` mm (the extent DICOM and NIfTI viewers report); it is
    assigned to the world axis its direction is closest to, so a permuted or flipped grid gives the same
    figures and an oblique (rotated, gantry-tilted) one its true extent, not its world bounding box.

    Args:
        shape: the spatial shape (voxels), e.g. ``(X, Y, Z)``.
        affine: ``(4, 4)`` voxel → world (mm). RAS or LPS world: ``(left-right, anterior-posterior,
            superior-inferior)``; a ``(z, y, x)`` world such as napari's gives them in that order instead.

    Returns:
        Extents in mm along world axes 0, 1, 2.

    Raises:
        ValueError: fewer than three dimensions, or an affine with a zero column.
    """
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    if len(shape) < 3:
        raise ValueError(f"field of view needs a 3D shape, got {tuple(shape)}")
    from scipy.optimize import linear_sum_assignment

    spacing = np.linalg.norm(a, axis=0)
    if not (spacing > 0).all():
        raise ValueError(f"affine has a zero column (no spacing): {a.tolist()}")
    # one world axis per voxel axis, the closest overall (a 45-degree tie still gives a permutation)
    world, voxel = linear_sum_assignment(-np.abs(a / spacing))
    ext = [0.0, 0.0, 0.0]
    for w, v in zip(world, voxel):
        ext[int(w)] = float(shape[int(v)]) * float(spacing[int(v)])
    return ext[0], ext[1], ext[2]


def body_parts_mask(image: np.ndarray, min_share: float = 0.02, opening_radius: int = 3) -> np.ndarray:
    """The patient including separate limbs: every sizeable body part above -300 HU, not the table.

    :func:`m2f_med.inference.qc.body_mask` keeps only the largest component, so the arms of a whole CT or the
    other leg of a two-leg scan fall "outside"; lesions can lie there. Here the voxels above
    :data:`m2f_med.inference.qc.BODY_HU` are opened slice by slice with a disk of ``opening_radius`` voxels
    (removing thin structures: the table's shells, blankets, cables), each 3D component of the opened mask
    of at least ``min_share`` of the largest one's voxels is a body part, and the original components that
    contain one are kept, holes filled slice by slice.

    Args:
        image: ``(X, Y, Z)`` CT in HU, axial slices along the last axis.
        min_share: smallest body part, as a share of the largest one's voxels.
        opening_radius: in-plane radius (voxels) of the opening.

    Returns:
        ``(X, Y, Z)`` bool.
    """
    from scipy import ndimage

    from m2f_med.inference.qc import BODY_HU

    above = np.asarray(image) > BODY_HU
    if not above.any():
        return above
    r = int(opening_radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy ** 2 + xx ** 2 <= r * r)[..., None]
    opened = ndimage.binary_opening(above, structure=disk)
    parts, n = ndimage.label(opened)
    if n == 0:
        return np.zeros_like(above)
    sizes = np.bincount(parts.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_share * sizes.max()) + 1
    comps, _ = ndimage.label(above)
    body_ids = np.unique(comps[np.isin(parts, keep)])
    body = np.isin(comps, body_ids[body_ids > 0])
    for z in range(body.shape[2]):
        body[..., z] = ndimage.binary_fill_holes(body[..., z])
    return body


def lesion_quality_control(
    rows: Sequence[Mapping[str, Any]],
    instance_map: np.ndarray,
    image: np.ndarray | None,
    affine: np.ndarray,
    settings: LesionQCSettings,
    *,
    modality: str = "",
    id_key: str = "id",
    score_key: str = "score",
    field_of_view: Sequence[float] | None = None,
    body: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add ``qc`` and ``qc_reasons`` to lesion rows; also return the scan-level finding.

    Args:
        rows: lesion rows with ``id_key`` (the lesion's id in ``instance_map``), ``volume_ml`` (mL),
            ``mean_intensity`` (HU for CT) and ``score_key`` (0-1), e.g.
            :func:`m2f_med.inference.instances.instance_table` rows.
        instance_map: 3D ids (0 background), ``(X, Y, Z)`` with axial slices along the last axis (the body
            check fills holes per slice along it).
        image: the image on the same grid (HU for CT), or ``None`` (no body check).
        affine: ``(4, 4)`` voxel → RAS/LPS world (mm) of that grid, for the field of view.
        settings: the bundle's :class:`LesionQCSettings`.
        modality: ``"CT"`` enables the HU and body checks; MR/PET get field-of-view, volume and score checks.
        id_key, score_key: row keys of the lesion id and score.
        field_of_view: ``(left-right, anterior-posterior, S-I)`` mm, instead of measuring ``affine``'s grid
            (a caller whose grid is not RAS/LPS-ordered, e.g. napari's display grid, passes the source's).
        body: a precomputed :func:`body_parts_mask` of ``image`` (callers that re-run QC after edits).

    Returns:
        ``(rows, scan)``: copies of ``rows`` with ``qc`` (``"ok"`` / ``"check"`` / ``"fail"``) and
        ``qc_reasons`` (list of str); ``scan`` = ``{"field_of_view_mm": [lr, ap, si], "modality",
        "reasons": [...]}``. A lesion with no voxels in the map gets ``check`` ("not assessed").

    Raises:
        ValueError: ``image`` and ``instance_map`` differ in shape, or a row has no ``id_key``.
    """
    ids = np.asarray(instance_map)
    if image is not None and tuple(np.shape(image)) != tuple(ids.shape):
        raise ValueError(f"lesion QC: image {tuple(np.shape(image))} and instance map {ids.shape} differ in shape")
    fov = tuple(float(v) for v in field_of_view) if field_of_view is not None else field_of_view_mm(ids.shape, affine)
    scan_reasons = []
    if settings.max_field_of_view_mm is not None and max(fov[:2]) > settings.max_field_of_view_mm:
        scan_reasons.append(
            f"input field of view {fov[0]:.0f} x {fov[1]:.0f} mm is larger than any image the lesion model was "
            f"trained on (at most {settings.max_field_of_view_mm:.0f} mm): its behaviour on such scans is "
            "not validated and false-positive lesions are likely")
    is_ct = str(modality).upper() == "CT"
    if body is None and is_ct and image is not None and rows:
        body = body_parts_mask(np.asarray(image))
    from scipy import ndimage

    boxes = ndimage.find_objects(ids.astype(np.int64, copy=False)) if rows and ids.size else []
    out = []
    for r in rows:
        if id_key not in r:
            raise ValueError(f"lesion QC: a row has no {id_key!r}: {dict(r)}")
        row = dict(r)
        fail: list[str] = []
        check: list[str] = ["the input is larger than the training images: whole-scan behaviour not validated"
                            ] if scan_reasons else []
        lesion = int(row[id_key])
        box = boxes[lesion - 1] if 0 < lesion <= len(boxes) else None
        if box is None:
            row.update(qc="check", qc_reasons=[f"lesion {lesion} has no voxels in the instance map: not assessed"]
                       + check)
            out.append(row)
            continue
        volume = row.get("volume_ml")
        if settings.max_volume_ml is not None and volume is not None and float(volume) > settings.max_volume_ml:
            check.append(f"volume {float(volume):.0f} mL is larger than any training lesion "
                         f"(at most {settings.max_volume_ml:.0f} mL)")
        mean = row.get("mean_intensity")
        if is_ct and settings.hu_mean_range is not None and mean is not None:
            lo, hi = settings.hu_mean_range
            if float(mean) < lo:
                fail.append(f"mean {float(mean):.0f} HU below {lo:g} HU: mostly air or lung, not a solid lesion")
            elif float(mean) > hi:
                fail.append(f"mean {float(mean):.0f} HU above {hi:g} HU: mostly bone or contrast medium")
        if body is not None:
            where = ids[box] == lesion
            outside = 1.0 - float(body[box][where].mean())
            if outside > settings.outside_body_fail:
                fail.append(f"{100 * outside:.0f} % of it lies outside the body (air or the table)")
        score = row.get(score_key)
        if score is not None and float(score) < settings.low_score:
            check.append(f"low score {float(score):.2f} (< {settings.low_score:g})")
        row.update(qc="fail" if fail else "check" if check else "ok", qc_reasons=fail + check)
        out.append(row)
    return out, {"field_of_view_mm": [round(v, 1) for v in fov], "modality": str(modality or "") or None,
                 "reasons": scan_reasons}
