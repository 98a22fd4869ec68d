"""Lesion-wise evaluation: per-patient Dice, lesion detection (sensitivity, precision, F1) and panoptic quality.

Definitions (3D, one patient, one lesion class):

* **Dice** of the semantic masks (all predicted lesion voxels vs all reference lesion voxels); 1.0 when both
  are empty.
* **Detection**: predicted and reference lesions are paired one-to-one by the Munkres assignment on their
  IoU (MONAI ``compute_panoptic_quality`` with ``match_iou_threshold < 0.5``); a pair counts as a detection
  (true positive) when its **IoU > 0.1** (:data:`DETECTION_IOU`), i.e. Dice > 0.18. Unpaired predictions
  are false positives, unpaired references false negatives. Sensitivity = TP / (TP + FN),
  precision = TP / (TP + FP), F1 = 2 TP / (2 TP + FP + FN).
* **Panoptic quality** (Kirillov et al., CVPR 2019): pairs with **IoU > 0.5** (:data:`PQ_IOU`, unique by
  construction); SQ = mean IoU of the pairs, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ × RQ. Computed by
  MONAI's ``monai.metrics.compute_panoptic_quality`` (which handles HWD volumes), not re-implemented.

Over several patients, :func:`summarise_lesion_metrics` reports the mean per-patient Dice and the pooled
(dataset-level) counts: sensitivity / precision / F1 from the summed TP / FP / FN, PQ from the summed IoU
and counts, as PQ is defined over a data set.

Reference lesions come from a reference label map by 3D connected components (26-connectivity), the usual
definition when a reference has no instance ids (:func:`reference_instances`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.metrics import compute_panoptic_quality
from scipy import ndimage

__all__ = ["DETECTION_IOU", "PQ_IOU", "LesionCounts", "lesion_metrics", "reference_instances",
           "summarise_lesion_metrics"]

DETECTION_IOU = 0.1
PQ_IOU = 0.5


@dataclass
class LesionCounts:
    """Lesion-wise results of one patient (or pooled over several).

    Attributes:
        dice: semantic Dice (mean over patients when pooled).
        tp, fp, fn: detection counts at IoU > :data:`DETECTION_IOU`.
        pq_tp, pq_fp, pq_fn: counts at IoU > :data:`PQ_IOU`.
        pq_iou_sum: sum of the IoUs of the PQ pairs.
        num_reference, num_predicted: lesions in the reference / prediction.
    """

    dice: float
    tp: int
    fp: int
    fn: int
    pq_tp: int
    pq_fp: int
    pq_fn: int
    pq_iou_sum: float
    num_reference: int
    num_predicted: int

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN); ``nan`` without reference lesions."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def precision(self) -> float:
        """TP / (TP + FP); ``nan`` without predicted lesions."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN); 1.0 when there are no lesions at all."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def sq(self) -> float:
        """Mean IoU of the PQ pairs; ``nan`` without pairs."""
        return self.pq_iou_sum / self.pq_tp if self.pq_tp else float("nan")

    @property
    def rq(self) -> float:
        """TP / (TP + FP/2 + FN/2) at IoU > 0.5; 1.0 when there are no lesions at all."""
        d = self.pq_tp + 0.5 * self.pq_fp + 0.5 * self.pq_fn
        return self.pq_tp / d if d else 1.0

    @property
    def pq(self) -> float:
        """SQ × RQ = sum IoU / (TP + FP/2 + FN/2); 1.0 when there are no lesions at all."""
        d = self.pq_tp + 0.5 * self.pq_fp + 0.5 * self.pq_fn
        return self.pq_iou_sum / d if d else 1.0

    def as_dict(self) -> dict[str, float]:
        """Counts and derived metrics as a flat dict (JSON/CSV row)."""
        out = asdict(self)
        out.update(sensitivity=self.sensitivity, precision=self.precision, f1=self.f1, sq=self.sq,
                   rq=self.rq, pq=self.pq)
        return out


def reference_instances(label: np.ndarray, classes: Iterable[int] = (1,)) -> np.ndarray:
    """Instance ids of a reference label map: 3D connected components (26-connectivity) of ``classes``.

    Args:
        label: ``(X, Y, Z)`` integer label map.
        classes: label values that are lesions.

    Returns:
        ``(X, Y, Z)`` int32 instance map, 0 = background, ``1..N``.
    """
    lab = np.asarray(label)
    out = np.zeros(lab.shape, np.int32)
    structure = ndimage.generate_binary_structure(3, 3)
    offset = 0
    for c in classes:
        comp, n = ndimage.label(lab == int(c), structure=structure)
        out[comp > 0] = comp[comp > 0] + offset
        offset += n
    return out


def _crop(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both maps cut to the bounding box of their union (IoUs are unchanged; MONAI builds one mask each)."""
    union = (pred > 0) | (ref > 0)
    if not union.any():
        return pred[:0], ref[:0]
    sl = ndimage.find_objects(union.astype(np.uint8))[0]
    return pred[sl], ref[sl]


def lesion_metrics(pred_instances: np.ndarray, ref_instances: np.ndarray) -> LesionCounts:
    """Lesion-wise metrics of one patient (module docstring for the definitions and thresholds).

    Args:
        pred_instances: ``(X, Y, Z)`` integer map, 0 = background, one id per predicted lesion.
        ref_instances: same grid, one id per reference lesion (e.g. :func:`reference_instances`).

    Returns:
        :class:`LesionCounts`.

    Raises:
        ValueError: the two maps differ in shape.
    """
    pred, ref = np.asarray(pred_instances), np.asarray(ref_instances)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} are not on one grid")
    p_fg, r_fg = pred > 0, ref > 0
    denom = int(p_fg.sum()) + int(r_fg.sum())
    dice = 2.0 * int((p_fg & r_fg).sum()) / denom if denom else 1.0
    n_pred = len(np.unique(pred[p_fg]))
    n_ref = len(np.unique(ref[r_fg]))
    pred_c, ref_c = _crop(pred, ref)
    if pred_c.size == 0:
        return LesionCounts(dice, 0, 0, 0, 0, 0, 0, 0.0, 0, 0)
    p_t = torch.from_numpy(pred_c.astype(np.int32))
    r_t = torch.from_numpy(ref_c.astype(np.int32))
    det = compute_panoptic_quality(p_t, r_t, match_iou_threshold=DETECTION_IOU, output_confusion_matrix=True)
    pq = compute_panoptic_quality(p_t, r_t, match_iou_threshold=PQ_IOU, output_confusion_matrix=True)
    return LesionCounts(
        dice=float(dice), tp=int(det[0]), fp=int(det[1]), fn=int(det[2]),
        pq_tp=int(pq[0]), pq_fp=int(pq[1]), pq_fn=int(pq[2]), pq_iou_sum=float(pq[3]),
        num_reference=n_ref, num_predicted=n_pred,
    )


def summarise_lesion_metrics(per_patient: Mapping[str, LesionCounts] | Iterable[LesionCounts]) -> dict[str, float]:
    """Mean per-patient Dice and pooled detection / panoptic metrics over patients (module docstring).

    Returns:
        ``{"patients", "dice_mean", "dice_std", "tp", "fp", "fn", "sensitivity", "precision", "f1", "sq",
        "rq", "pq"}``.

    Raises:
        ValueError: no patients.
    """
    rows = list(per_patient.values()) if isinstance(per_patient, Mapping) else list(per_patient)
    if not rows:
        raise ValueError("no patients to summarise")
    pooled = LesionCounts(
        dice=float(np.mean([r.dice for r in rows])),
        **{k: sum(getattr(r, k) for r in rows) for k in ("tp", "fp", "fn", "pq_tp", "pq_fp", "pq_fn",
                                                        "pq_iou_sum", "num_reference", "num_predicted")},
    )
    return {
        "patients": len(rows), "dice_mean": pooled.dice, "dice_std": float(np.std([r.dice for r in rows])),
        "tp": pooled.tp, "fp": pooled.fp, "fn": pooled.fn, "sensitivity": pooled.sensitivity,
        "precision": pooled.precision, "f1": pooled.f1, "sq": pooled.sq, "rq": pooled.rq, "pq": pooled.pq,
    }
