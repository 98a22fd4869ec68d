"""Files <-> volumes with exact geometry (see docs/ARCHITECTURE.md for the volume contract).

The names below are imported on first use (PEP 562 module ``__getattr__``): ``import m2f_med.io`` and
``from m2f_med.io.errors import VolumeError`` load neither torch nor MONAI, so the CLI starts in well under
a second. Each submodule imports only what it needs (``dicom_index`` needs pydicom and numpy; building a
``MetaTensor`` needs torch and MONAI).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VolumeError": "errors",
    "DecoderMissingError": "errors",
    "DicomIndex": "dicom_index",
    "StudyInfo": "dicom_index",
    "SeriesInfo": "dicom_index",
    "InstanceInfo": "dicom_index",
    "index_dicom_tree": "dicom_index",
    "select_series": "series_selection",
    "SeriesSelectionError": "series_selection",
    "AmbiguousSeriesError": "series_selection",
    "NoSeriesError": "series_selection",
    "load_dicom_series": "dicom_series",
    "DECODER_PACKAGES": "dicom_pixels",
    "load_volume": "loader",
    "load_image_file": "image_files",
    "write_nifti": "writers",
    "read_label_names_beside": "label_names",
    "write_label_names_beside": "label_names",
    "load_rtstruct": "rtstruct",
    "rtstruct_masks": "rtstruct",
    "write_dicom_seg": "dicom_seg",
    "read_dicom_seg": "dicom_seg",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'm2f_med.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"m2f_med.io.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

