"""npe2 writers: a Labels layer → NIfTI label map or DICOM-SEG, on the exact source grid and affine.

The layer is first put back on its source grid (``_layers.labels_volume_from_layer``: the inverse of the
display flips/swaps, the source RAS affine bit for bit); then ``m2f_med.io.write_nifti`` or
``m2f_med.io.write_dicom_seg`` writes it atomically. Structure names come from the layer's ``features``
table (``index`` → ``name``), so names edited in napari are saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_m2f_med._context import image_under_layer
from napari_m2f_med._layers import labels_volume_from_layer

__all__ = ["write_labels_nifti", "write_labels_dicom_seg", "names_from_features"]


def names_from_features(features: Any) -> dict[int, str]:
    """``{label id: name}`` from a Labels ``features`` table (columns ``index`` and ``name``; 0 dropped).

    Args:
        features: a pandas DataFrame or a dict of columns; anything else gives ``{}``.
    """
    if features is None:
        return {}
    columns = features if isinstance(features, Mapping) else {c: list(features[c]) for c in features.columns}
    if "name" not in columns:
        return {}
    ids = columns.get("index", range(len(columns["name"])))
    names = {}
    for i, name in zip(ids, columns["name"]):
        if i is None or (isinstance(i, float) and math.isnan(i)) or int(i) == 0:
            continue
        if isinstance(name, str) and name and name != "background":
            names[int(i)] = name
    return names


def _label_volume(data: Any, meta: Mapping[str, Any]):
    arr = np.asarray(data)
    under = None
    if not (meta.get("metadata") or {}).get("m2f_med"):
        under = image_under_layer(meta, arr.shape)
    label, info = labels_volume_from_layer(arr, meta, under=under)
    reference = info.reference if info is not None else None
    if reference is None and under is not None:
        reference = under.volume
    names = names_from_features(meta.get("features")) or (dict(info.names) if info is not None else {})
    return label, info, reference, names


def write_labels_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as a NIfTI label map (uint8/uint16) with the source image's affine.

    Args:
        path: output ``.nii`` / ``.nii.gz`` file.
        data: the layer data ``(Z', Y', X')``.
        meta: the layer state napari passes (scale, translate, affine, metadata, features, ...).

    Returns:
        ``[path]``, plus ``<stem>.labels.json`` with the structure names when the layer has any (NIfTI
        cannot hold names; the reader picks the sidecar up again).

    Raises:
        VolumeError: wrong suffix, negative or too large label values (``m2f_med.io.write_nifti``).
        ValueError: the layer is not 3-D.
    """
    from m2f_med.io.label_names import write_label_names_beside
    from m2f_med.io.writers import write_nifti

    label, _info, _reference, names = _label_volume(data, meta)
    written = [str(write_nifti(label, path, label=True))]
    if names:
        written.append(str(write_label_names_beside(path, names)))
    return written


def write_labels_dicom_seg(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as a DICOM-SEG that references the DICOM series it was drawn on.

    Segments are named from the layer's features; model output (a layer with confidences) is written as
    AUTOMATIC segments by "m2f-med", anything else as MANUAL (DICOM PS3.3 C.8.20.2).

    Args:
        path: output ``.dcm`` file.
        data: the layer data ``(Z', Y', X')``.
        meta: the layer state napari passes.

    Returns:
        ``[path]``.

    Raises:
        VolumeError: the labels do not belong to an image read from DICOM (a SEG must reference its
            source instances), the mask is empty, or ``m2f_med.io.write_dicom_seg`` refuses it.
    """
    from m2f_med.io.dicom_seg import write_dicom_seg
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.volume import SOP_UIDS

    label, info, reference, names = _label_volume(data, meta)
    if reference is None or not getattr(reference, "meta", {}).get(SOP_UIDS):
        raise VolumeError(
            path,
            "a DICOM-SEG must reference the DICOM series the labels were drawn on; open that series with "
            "m2f-med and draw or predict on it (or save as NIfTI instead)",
        )
    algorithm = "m2f-med" if info is not None and info.confidence else None
    return [str(write_dicom_seg(label, reference, path, labels=names, algorithm=algorithm))]
