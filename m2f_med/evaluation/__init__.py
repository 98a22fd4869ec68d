"""Evaluation of predictions against reference segmentations (lesion-wise detection, Dice, panoptic quality)."""

from m2f_med.evaluation.lesions import (
    DETECTION_IOU,
    PQ_IOU,
    LesionCounts,
    lesion_metrics,
    reference_instances,
    summarise_lesion_metrics,
)

__all__ = [
    "DETECTION_IOU",
    "PQ_IOU",
    "LesionCounts",
    "lesion_metrics",
    "reference_instances",
    "summarise_lesion_metrics",
]
