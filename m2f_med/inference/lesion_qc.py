"""Quality control of predicted lesions: per lesion a verdict with reasons, and a scan-level check of the input.

A lesion model is only validated on inputs like its training data. The bundle declares that data's extent
(bundle key ``lesion_qc``, :class:`LesionQCSettings`); every lesion then gets ``qc`` = ``"ok"``, ``"check"``
(look before trusting it) or ``"fail"`` (not a lesion as the model was trained to find), with
``qc_reasons``:

* **input larger than the training crops**: the scan's field of view (world left-right or
  anterior-posterior extent, mm) exceeds ``max_field_of_view_mm`` → ``check`` on every lesion and a
  scan-level warning. A model trained on tumour-centred crops has never seen most of a whole CT's anatomy;
  its false positives there are unmeasured (the sarcoma bundle's local LUNG1-001 check found a 1363 mL one);
* **volume above any training lesion**: ``volume_ml > max_volume_ml`` → ``check``;
* **mean HU outside solid or fatty soft tissue** (CT only): a mean below ``hu_mean_range[0]`` is mostly air
  or lung, above ``hu_mean_range[1]`` mostly bone or contrast medium → ``fail``. The default -150..+200 HU
  spans fat (about -100 HU) to enhancing soft tissue: unenhanced soft tissues lie at about +20..+65 HU
  (Lamba R. et al. AJR 2014;203:1013-1020) and portal-phase enhancement adds about +50..+100 HU (Bae K.T.
  Radiology 2010;256:32-61), the references of :mod:`m2f_med.inference.qc`. A lipomatous tumour can be near
  fat; a calcified one can exceed the upper bound, so a bundle may widen the range;
* **outside the body**: more than 20 % of the voxels outside the patient (``m2f_med.inference.qc.body_mask``)
  → ``fail``;
* **low score**: below ``low_score`` → ``check`` (the same threshold as the ``low_confidence`` flag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LesionQCSettings", "field_of_view_mm", "lesion_quality_control"]


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
        """Settings from a bundle's ``lesion_qc`` mapping (unknown keys raise ``ValueError``)."""
        spec = dict(spec or {})
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown lesion_qc keys {sorted(unknown)}; use {sorted(cls.__dataclass_fields__)}")
        if spec.get("hu_mean_range") is not None:
            lo, hi = (float(v) for v in spec["hu_mean_range"])
            if not lo < hi:
                raise ValueError(f"lesion_qc hu_mean_range must be [low, high] with low < high, got {[lo, hi]}")
            spec["hu_mean_range"] = (lo, hi)
        for key in ("max_field_of_view_mm", "max_volume_ml"):
            if spec.get(key) is not None:
                spec[key] = float(spec[key])
                if spec[key] <= 0:
                    raise ValueError(f"lesion_qc {key} must be positive, got {spec[key]}")
        if low_score is not None and "low_score" not in spec:
            spec["low_score"] = float(low_score)
        return cls(**spec)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (written into ``instances.json`` as ``qc_settings``)."""
        d = asdict(self)
        d["hu_mean_range"] = list(self.hu_mean_range) if self.hu_mean_range is not None else None
        return d


def field_of_view_mm(shape: Sequence[int], affine: np.ndarray) -> tuple[float, float, float]:
    """Extent (mm) of a grid's voxel centres along the world axes: ``(left-right, anterior-posterior, S-I)``.

    Args:
        shape: the spatial shape ``(X, Y, Z)`` (voxels).
        affine: ``(4, 4)`` voxel → world (mm), RAS or LPS (extents do not depend on the sign).

    Returns:
        Extents in mm, independent of how the grid is oriented (a transposed display grid gives the same).
    """
    a = np.asarray(affine, dtype=np.float64)
    top = np.asarray(shape[:3], dtype=np.float64) - 1
    corners = np.array([[i, j, k] for i in (0, top[0]) for j in (0, top[1]) for k in (0, top[2])])
    world = corners @ a[:3, :3].T
    ext = world.max(0) - world.min(0)
    # a voxel centre-to-centre extent plus one voxel: the field of view DICOM and NIfTI viewers report
    ext = ext + np.abs(a[:3, :3]).max(1)
    return float(ext[0]), float(ext[1]), float(ext[2])


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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add ``qc`` and ``qc_reasons`` to lesion rows; also return the scan-level finding.

    Args:
        rows: lesion rows with ``id_key`` (the lesion's id in ``instance_map``), ``volume_ml``,
            ``mean_intensity`` (HU for CT) and ``score_key`` (0-1), e.g.
            :func:`m2f_med.inference.instances.instance_table` rows.
        instance_map: ``(X, Y, Z)`` ids (0 background) on the image grid.
        image: ``(X, Y, Z)`` image on the same grid (HU for CT), or ``None`` (no body check).
        affine: ``(4, 4)`` voxel → world (mm) of that grid.
        settings: the bundle's :class:`LesionQCSettings`.
        modality: ``"CT"`` enables the HU and body checks.
        id_key, score_key: row keys of the lesion id and score.

    Returns:
        ``(rows, scan)``: copies of ``rows`` with ``qc`` (``"ok"`` / ``"check"`` / ``"fail"``) and
        ``qc_reasons`` (list of str); ``scan`` = ``{"field_of_view_mm": [lr, ap, si], "reasons": [...]}``.

    Raises:
        ValueError: ``image`` and ``instance_map`` differ in shape.
    """
    from m2f_med.inference.qc import body_mask

    ids = np.asarray(instance_map)
    if image is not None and tuple(np.shape(image)) != tuple(ids.shape):
        raise ValueError(f"lesion QC: image {tuple(np.shape(image))} and instance map {ids.shape} differ in shape")
    fov = field_of_view_mm(ids.shape, affine)
    scan_reasons = []
    if settings.max_field_of_view_mm is not None and max(fov[:2]) > settings.max_field_of_view_mm:
        scan_reasons.append(
            f"input field of view {fov[0]:.0f} x {fov[1]:.0f} mm is larger than any image the lesion model was "
            f"trained on (at most {settings.max_field_of_view_mm:.0f} mm): its behaviour on such scans is "
            "not validated and false-positive lesions are likely")
    is_ct = str(modality).upper() == "CT"
    body = None
    if is_ct and image is not None and rows:
        body = body_mask(np.asarray(image, dtype=np.float32))
    out = []
    for r in rows:
        row = dict(r)
        fail: list[str] = []
        check: list[str] = ["the input is larger than the training images: whole-scan behaviour not validated"
                            ] if scan_reasons else []
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
            where = ids == int(row[id_key])
            if where.any():
                outside = 1.0 - float(body[where].mean())
                if outside > settings.outside_body_fail:
                    fail.append(f"{100 * outside:.0f} % of it lies outside the body (air or the table)")
        score = row.get(score_key)
        if score is not None and float(score) < settings.low_score:
            check.append(f"low score {float(score):.2f} (< {settings.low_score:g})")
        row.update(qc="fail" if fail else "check" if check else "ok", qc_reasons=fail + check)
        out.append(row)
    return out, {"field_of_view_mm": [round(v, 1) for v in fov], "reasons": scan_reasons}
