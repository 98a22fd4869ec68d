"""MONAI-style transforms for m2f-med: 2.5D slice stacks, label remapping, and a MONAI reader over our io.

Each array transform has a ``d``-suffixed dictionary twin usable in any MONAI ``Compose``. CT windowing and
MR percentile normalisation use MONAI's ``ScaleIntensityRanged`` / ``ScaleIntensityRangePercentilesd``
directly (see ``m2f_med.inference.preprocessing.intensity_transform`` for the bundle's ``intensity`` spec).
"""

from m2f_med.transforms.labels import RemapLabels, RemapLabelsd, mapping_from_names
from m2f_med.transforms.reader import M2FMedReader
from m2f_med.transforms.slice_stack import (
    SLICE_INDEX,
    RandSliceStackd,
    SliceStack,
    SliceStackd,
    slice_stack_indices,
)

__all__ = [
    "SLICE_INDEX",
    "M2FMedReader",
    "RandSliceStackd",
    "RemapLabels",
    "RemapLabelsd",
    "SliceStack",
    "SliceStackd",
    "mapping_from_names",
    "slice_stack_indices",
]
