"""Quality control of a predicted label map: per structure a verdict with reasons, and scan-level checks.

Each structure the model found gets ``qc`` = ``"ok"``, ``"check"`` (look before trusting it) or ``"fail"``
(not what the name says), with ``qc_reasons`` (one short sentence each); an empty structure gets
``"absent"``. The checks:

* **volume** outside a plausible adult range (:data:`REFERENCES`) → ``check``; a structure that touches the
  first or last slice is cut by the field of view, so its lower bound is not applied (noted instead);
* **HU mean** outside the organ's range (unenhanced to contrast-enhanced) → ``fail``; **HU spread**
  (population std) above the organ's limit → ``check`` (a real organ is near-homogeneous: noise and
  texture give tens of HU, a mix of bone, air and tissue gives hundreds);
* **several large disconnected parts** (3D 26-connected components of at least 5 mL and 10 % of the
  largest) → ``check``;
* **outside the body / on the table**: more than 20 % of the voxels outside the patient (the largest 3D
  component above -300 HU, holes filled slice by slice; the table is a separate component) → ``fail``;
  a separate part of at least 0.2 mL lying mostly outside it → ``check``;
* **body region not covered by the model**: the DICOM BodyPartExamined (0018,0015; PS3.16 CID 4031 terms)
  names a region outside the model's (e.g. ``EXTREMITY`` or ``HEAD`` for an abdominal model) → every
  structure ``fail``. Files without the attribute (NIfTI) give ``region_covered = None``: no image-only
  rule tested here separated abdominal crops from limb crops, so none is applied;
* **low confidence**: mean probability of the predicted class below :data:`LOW_CONFIDENCE` → ``check``.

Ranges are from anatomy and radiology references, not fitted to any scan here (:data:`REFERENCE_SOURCES`):

* HU, unenhanced: Lamba R. et al. CT Hounsfield numbers of soft tissues on unenhanced abdominal CT scans.
  AJR 2014;203:1013-1020 (liver ~55-65, spleen ~45-50, kidney ~30-35, pancreas ~40-45, blood ~40 HU).
  Enhancement: Bae K.T. Intravenous contrast medium administration and scan timing at CT. Radiology
  2010;256:32-61 (aorta 250-500 HU in the arterial phase; parenchyma +50-100 HU in the portal phase).
  Fatty liver can fall to about -10..+40 HU unenhanced (Lamba 2014; Kodama Y. et al. AJR 2007;188:1307).
* Volumes: liver 1000-2500 mL (Heinemann A. et al. Standard liver volume in the Caucasian population.
  Liver Transpl Surg 1999;5:366-368); spleen 107-314 mL normal (Prassopoulos P. et al. Determination of
  normal splenic volume on computed tomography. Eur Radiol 1997;7:246-248), splenomegaly to > 1000 mL;
  kidney about 100-300 mL each (Cheong B. et al. Normal values for renal length and volume as measured by
  MRI. Clin J Am Soc Nephrol 2007;2:38-45); pancreas 40-110 mL (Saisho Y. et al. Pancreas volumes in humans
  from birth to age one hundred. Clin Anat 2007;20:933-942). Stomach, gallbladder, aorta and IVC depend on
  filling and on how much of the vessel the scan covers: only wide limits.

The plausible ranges below widen these normal values to allow common disease (steatosis, splenomegaly,
hydronephrosis); they are meant to catch model failures, not to diagnose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from m2f_med.inference.statistics import label_image_grid

__all__ = [
    "LOW_CONFIDENCE",
    "REFERENCES",
    "REFERENCE_SOURCES",
    "OrganReference",
    "body_mask",
    "quality_control",
    "region_covered",
]

LOW_CONFIDENCE = 0.6  # mean probability of the predicted class; a model setting, not anatomy
BODY_HU = -300.0  # patient vs air: fat is about -100 HU, lung about -850 HU (inside the filled body)
OUTSIDE_BODY_FAIL = 0.2
PART_MIN_ML = 5.0
OUTSIDE_PART_MIN_ML = 0.2
PART_MIN_SHARE = 0.1
_MAX_BODY_VOXELS = 16_000_000  # the body mask is computed on a regular subsample of larger volumes


@dataclass(frozen=True)
class OrganReference:
    """Plausible adult values of one structure on CT.

    Attributes:
        volume_ml: plausible whole-organ volume (mL), normal values widened for common disease.
        hu_mean: plausible mean attenuation (HU), unenhanced to contrast-enhanced.
        hu_std_max: largest plausible spread (population std, HU) of the structure's voxels.
        source: key of :data:`REFERENCE_SOURCES`.
    """

    volume_ml: tuple[float, float]
    hu_mean: tuple[float, float]
    hu_std_max: float
    source: str


REFERENCE_SOURCES = {
    "liver": "Heinemann 1999 (volume); Lamba 2014, Bae 2010, Kodama 2007 (HU)",
    "spleen": "Prassopoulos 1997 (volume); Lamba 2014, Bae 2010 (HU)",
    "kidney": "Cheong 2007 (volume); Lamba 2014, Bae 2010 (HU)",
    "pancreas": "Saisho 2007 (volume); Lamba 2014, Bae 2010 (HU)",
    "vessel": "Lamba 2014 (blood HU), Bae 2010 (arterial/venous enhancement); volume depends on coverage",
    "hollow": "contents vary (water, food, gas; bile 0-20 HU); volume depends on filling",
}

REFERENCES: dict[str, OrganReference] = {
    "liver": OrganReference((600.0, 4000.0), (-30.0, 200.0), 80.0, "liver"),
    "spleen": OrganReference((40.0, 1500.0), (10.0, 220.0), 80.0, "spleen"),
    "kidney_right": OrganReference((50.0, 500.0), (10.0, 300.0), 120.0, "kidney"),
    "kidney_left": OrganReference((50.0, 500.0), (10.0, 300.0), 120.0, "kidney"),
    "pancreas": OrganReference((20.0, 200.0), (-30.0, 220.0), 80.0, "pancreas"),
    "aorta": OrganReference((5.0, 800.0), (10.0, 600.0), 150.0, "vessel"),
    "inferior_vena_cava": OrganReference((3.0, 400.0), (0.0, 400.0), 150.0, "vessel"),
    "stomach": OrganReference((20.0, 3000.0), (-300.0, 250.0), 250.0, "hollow"),
    "gallbladder": OrganReference((3.0, 200.0), (-30.0, 100.0), 60.0, "hollow"),
}

# BodyPartExamined terms (PS3.16 CID 4031 and common vendor spellings) per model region
_REGION_TERMS = {
    "abdomen": {"ABDOMEN", "ABDOMENPELVIS", "ABDOMEN_PELVIS", "ABDPELVIS", "CHESTABDOMEN", "CHESTABDPELVIS",
                "CHEST_ABDOMEN_PELVIS", "CAP", "TRUNK", "WHOLEBODY", "WHOLE_BODY", "LIVER", "KIDNEY",
                "PANCREAS", "SPLEEN", "STOMACH", "GALLBLADDER", "AORTA", "RETROPERITONEUM"},
}
_OUTSIDE_TERMS = {
    "abdomen": {"HEAD", "BRAIN", "SKULL", "HEADNECK", "HEAD_NECK", "NECK", "ORBIT", "IAC", "SINUS",
                "EXTREMITY", "UPPEREXTREMITY", "LOWEREXTREMITY", "ARM", "FOREARM", "HAND", "WRIST", "ELBOW",
                "HUMERUS", "SHOULDER", "LEG", "LOWERLEG", "THIGH", "FEMUR", "KNEE", "TIBIA", "ANKLE", "FOOT",
                "HIP"},
}


def region_covered(meta: Mapping[str, Any], region: str | None) -> tuple[bool | None, str | None]:
    """Whether the scan's body region is one the model covers, from DICOM BodyPartExamined.

    Returns:
        ``(covered, reason)``: ``False`` with a reason when BodyPartExamined names a region outside
        ``region``; ``True`` when it names one inside; ``None`` when the attribute is absent, unknown or
        ambiguous (e.g. ``PARTIALBODY``, ``CHEST``), or the model has no region.
    """
    part = str(meta.get("BodyPartExamined", "") or "").upper().replace(" ", "")
    if not region or not part:
        return None, None
    if part in _OUTSIDE_TERMS.get(region, set()):
        return False, f"body region not covered by the model: BodyPartExamined {part}, model region {region}"
    if part in _REGION_TERMS.get(region, set()):
        return True, None
    return None, None


def body_mask(image: np.ndarray, step: int = 1) -> np.ndarray:
    """The patient: largest 3D component above -300 HU, holes filled slice by slice.

    Args:
        image: ``(X, Y, Z)`` CT in HU.
        step: in-plane subsampling already applied by the caller (only for documentation of the grid).

    Returns:
        ``(X, Y, Z)`` bool. The CT table is a separate component and lies outside.
    """
    above = image > BODY_HU
    lab, n = ndimage.label(above)
    if n == 0:
        return above
    sizes = np.bincount(lab.ravel())[1:]
    body = lab == (1 + int(np.argmax(sizes)))
    for z in range(body.shape[2]):
        body[..., z] = ndimage.binary_fill_holes(body[..., z])
    return body


def _model_region(labels: Mapping[int, str]) -> str | None:
    abdominal = {"liver", "spleen", "kidney_left", "kidney_right", "pancreas", "stomach", "gallbladder"}
    return "abdomen" if abdominal & {str(n) for n in labels.values()} else None


def quality_control(
    rows: Sequence[Mapping[str, Any]],
    label: torch.Tensor | np.ndarray,
    image: torch.Tensor | np.ndarray,
    *,
    affine: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    modality: str = "",
    region: str | None = "auto",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Add a QC verdict and reasons to statistics rows; also return scan-level findings.

    Args:
        rows: :func:`m2f_med.inference.statistics.structure_statistics` rows (``label``, ``name``,
            ``voxels``, ``volume_ml``, ``mean_intensity``, ``std_intensity``, ``confidence``).
        label: ``(1, X, Y, Z)`` or ``(X, Y, Z)`` label map on the image grid.
        image: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` image (HU for CT; channel 0).
        affine: voxel → world (mm); default ``label.affine``.
        meta: the image's meta (``BodyPartExamined``); default ``image.meta``.
        modality: ``"CT"`` enables the HU and body checks; other modalities get volume, parts and
            confidence checks only.
        region: the model's body region (``"abdomen"``); ``"auto"`` = abdomen when the labels name
            abdominal organs; ``None`` = no region check.

    Returns:
        ``(rows, scan)``: copies of ``rows`` with ``qc`` (``"ok"`` / ``"check"`` / ``"fail"`` / ``"absent"``)
        and ``qc_reasons`` (list of str); ``scan`` = ``{"region", "body_part_examined", "region_covered",
        "reasons"}``.

    Raises:
        ValueError: label and image grids differ, or no affine is available.
    """
    meta = dict(meta if meta is not None else getattr(image, "meta", {}) or {})
    lab, img, voxel_ml = label_image_grid(label, image, affine, "quality_control")
    names = {int(r["label"]): str(r["name"]) for r in rows}
    if region == "auto":
        region = _model_region(names)
    covered, region_reason = region_covered(meta, region)
    is_ct = str(modality).upper() == "CT"
    body, step = None, 1
    if is_ct and any(int(r.get("voxels") or 0) for r in rows):
        step = max(1, int(np.ceil(np.sqrt(lab.size / _MAX_BODY_VOXELS))))
        body = body_mask(img[::step, ::step, :].astype(np.float32, copy=False))
    depth = lab.shape[2]
    out = []
    for r in rows:
        row = dict(r)
        reasons_fail: list[str] = []
        reasons_check: list[str] = []
        notes: list[str] = []
        n = int(row.get("voxels") or 0)
        name = str(row["name"])
        ref = REFERENCES.get(name)
        if n == 0:
            row.update(qc="absent", qc_reasons=[])
            out.append(row)
            continue
        value = int(row["label"])
        mask = lab == value
        zs = np.flatnonzero(mask.any(axis=(0, 1)))
        truncated = zs.size and (zs[0] == 0 or zs[-1] == depth - 1)
        volume = float(row.get("volume_ml") or n * voxel_ml)
        if ref is not None:
            lo, hi = ref.volume_ml
            if volume > hi:
                reasons_check.append(f"volume {volume:.0f} mL above the plausible adult range {lo:g}-{hi:g} mL")
            elif volume < lo and not truncated:
                reasons_check.append(f"volume {volume:.1f} mL below the plausible adult range {lo:g}-{hi:g} mL")
            elif volume < lo:
                notes.append(f"cut by the field of view (touches the first/last slice): volume {volume:.1f} mL "
                             "is partial")
        if is_ct and ref is not None and row.get("mean_intensity") is not None:
            mean, std = float(row["mean_intensity"]), float(row.get("std_intensity") or 0.0)
            if not ref.hu_mean[0] <= mean <= ref.hu_mean[1]:
                reasons_fail.append(f"mean {mean:.0f} HU outside the {name} range {ref.hu_mean[0]:g} to "
                                    f"{ref.hu_mean[1]:g} HU")
            if std > ref.hu_std_max:
                reasons_check.append(f"HU spread {std:.0f} (std) above {ref.hu_std_max:g} HU: not one "
                                     "homogeneous organ")
        # connected parts, on the structure's bounding box
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
        comp, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
        if count > 1:
            sizes = np.bincount(comp.ravel())[1:] * voxel_ml
            large = np.sort(sizes[(sizes >= PART_MIN_ML) & (sizes >= PART_MIN_SHARE * sizes.max())])[::-1]
            if large.size > 1:
                reasons_check.append(f"{large.size} large disconnected parts ("
                                     + ", ".join(f"{s:.0f}" for s in large[:4]) + " mL)")
        if body is not None:
            sub = mask[::step, ::step, :]
            inside = float(body[sub].mean()) if sub.any() else 1.0
            if 1.0 - inside > OUTSIDE_BODY_FAIL:
                reasons_fail.append(f"{100 * (1 - inside):.0f} % of it lies outside the body (air or the table)")
            elif step == 1 and count > 1:  # a separate piece outside the patient, e.g. on the table
                part_inside = ndimage.mean(body[box], comp, index=np.arange(1, count + 1))
                part_ml = np.bincount(comp.ravel())[1:] * voxel_ml
                away = part_ml[(np.asarray(part_inside) < 0.5) & (part_ml >= OUTSIDE_PART_MIN_ML)]
                if away.size:
                    reasons_check.append(f"{away.size} separate part(s) outside the body (air or the table): "
                                         f"{away.sum():.1f} mL")
        conf = row.get("confidence")
        if conf is not None and float(conf) < LOW_CONFIDENCE:
            reasons_check.append(f"low confidence {float(conf):.2f} (< {LOW_CONFIDENCE})")
        if covered is False:
            reasons_fail.insert(0, region_reason)
        verdict = "fail" if reasons_fail else "check" if reasons_check else "ok"
        row.update(qc=verdict, qc_reasons=reasons_fail + reasons_check + notes)
        out.append(row)
    scan = {"region": region, "body_part_examined": str(meta.get("BodyPartExamined", "") or "") or None,
            "region_covered": covered, "reasons": [region_reason] if region_reason else []}
    return out, scan
