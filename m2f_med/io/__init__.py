"""Files <-> volumes with exact geometry (see docs/ARCHITECTURE.md for the volume contract)."""

from m2f_med.io.dicom_index import DicomIndex, InstanceInfo, SeriesInfo, StudyInfo, index_dicom_tree
from m2f_med.io.dicom_pixels import DECODER_PACKAGES
from m2f_med.io.dicom_seg import read_dicom_seg, write_dicom_seg
from m2f_med.io.dicom_series import load_dicom_series
from m2f_med.io.errors import DecoderMissingError, VolumeError
from m2f_med.io.image_files import load_image_file
from m2f_med.io.label_names import read_label_names_beside, write_label_names_beside
from m2f_med.io.loader import load_volume
from m2f_med.io.rtstruct import load_rtstruct, rtstruct_masks
from m2f_med.io.series_selection import (
    AmbiguousSeriesError,
    NoSeriesError,
    SeriesSelectionError,
    select_series,
)
from m2f_med.io.writers import write_nifti

__all__ = [
    "VolumeError",
    "DecoderMissingError",
    "DicomIndex",
    "StudyInfo",
    "SeriesInfo",
    "InstanceInfo",
    "index_dicom_tree",
    "select_series",
    "SeriesSelectionError",
    "AmbiguousSeriesError",
    "NoSeriesError",
    "load_dicom_series",
    "DECODER_PACKAGES",
    "load_volume",
    "load_image_file",
    "write_nifti",
    "read_label_names_beside",
    "write_label_names_beside",
    "load_rtstruct",
    "rtstruct_masks",
    "write_dicom_seg",
    "read_dicom_seg",
]
