"""Support code for the MONAI bundles in ``bundles/`` (configs reference it with ``_target_:``).

Only what MONAI does not provide: Decathlon datalists with per-case label names (``datalist``), labels from
label maps, DICOM-SEG or RTSTRUCT read onto the image (``label_io``), remapping labels by structure name
(``labels``), partial-label batches (``partial``), atomic checkpoints and resume (``checkpoint``), named LR schedules (``schedules``), a
per-epoch CSV training log (``csv_log``), ``torch.export`` of a trained network (``export``), metric glue
(HD95 in mm, named metric reports; ``metrics``) and an atomic NIfTI writer for ``SaveImaged``
(``writer``). Everything else in the bundles is MONAI's own engines, handlers and transforms; the volume
inferer is ``m2f_med.inference.SlicewiseInferer``.
"""

from m2f_med.bundle.checkpoint import (
    AtomicCheckpointSaver,
    ResumeCheckpointLoader,
    latest_checkpoint,
    resume_checkpoint,
)
from m2f_med.bundle.csv_log import CSVStatsHandler
from m2f_med.bundle.datalist import fold_datalist, load_datalist, read_label_names, require_cases
from m2f_med.bundle.export import export_bundle_network
from m2f_med.bundle.label_io import LoadLabeld, load_label, snake_case
from m2f_med.bundle.labels import RemapLabelsByNamed, mapping_by_name
from m2f_med.bundle.metrics import ClassMetricsSaver, HausdorffDistanceMM, PhysicalHausdorffDistanceMetric
from m2f_med.bundle.partial import PartialLabelBatch
from m2f_med.bundle.schedules import make_lr_scheduler
from m2f_med.bundle.transfer import with_pretrained
from m2f_med.bundle.writer import AtomicNibabelWriter

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicNibabelWriter",
    "CSVStatsHandler",
    "ClassMetricsSaver",
    "HausdorffDistanceMM",
    "LoadLabeld",
    "PartialLabelBatch",
    "PhysicalHausdorffDistanceMetric",
    "RemapLabelsByNamed",
    "ResumeCheckpointLoader",
    "export_bundle_network",
    "fold_datalist",
    "latest_checkpoint",
    "load_label",
    "load_datalist",
    "make_lr_scheduler",
    "mapping_by_name",
    "read_label_names",
    "require_cases",
    "resume_checkpoint",
    "snake_case",
    "with_pretrained",
]
