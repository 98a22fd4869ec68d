"""npe2 writers: a Labels layer → NIfTI label map or DICOM-SEG, on the exact source grid and affine.

The layer is first put back on its source grid (``_layers.labels_volume_from_layer``: the inverse of the
display flips/swaps, the source RAS affine bit for bit); then ``m2f_med.io.write_nifti`` or
``m2f_med.io.write_dicom_seg`` writes it atomically. Structure names come from the layer's ``features``
table (``index`` → ``name``), so names edited in napari are saved.

Errors: the library raises ``VolumeError``, a ``ValueError``; napari's writer loop takes a ``ValueError``
for "this writer does not apply" and then says "no writer" / "not a valid writer" instead of the reason.
The writers therefore re-raise it as :class:`LayerSaveError` (a ``RuntimeError``), which napari shows as an
error notification with our one-line message (file and problem). :func:`seg_export_problem` tells *before*
saving why a layer cannot become a DICOM-SEG (the Review widget shows it on its disabled "Save DICOM-SEG"
button).

DICOM-SEG segments (``m2f_med.io.dicom_seg.SegmentInfo``): for a model result, structures the user left
alone are AUTOMATIC, structures changed by hand SEMIAUTOMATIC (both name the model as the algorithm), and
structures the model did not produce MANUAL; a layer drawn by hand is all MANUAL. Each segment's
RecommendedDisplayCIELabValue is the colour the layer shows it in (its colormap: the shared table, or a read
SEG's own colours). Extension point: :func:`segment_descriptions` builds the
per-segment list, so other descriptions (e.g. one segment per lesion with a tracking id) go there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_m2f_med._context import image_under_layer
from napari_m2f_med._layers import LayerInfo, edited_values, labels_volume_from_layer, layer_info

__all__ = [
    "LayerSaveError",
    "write_labels_nifti",
    "write_labels_dicom_seg",
    "names_from_features",
    "seg_export_problem",
    "segment_descriptions",
]


class LayerSaveError(RuntimeError):
    """A layer could not be saved; the message names the file and the problem.

    Not a ``ValueError`` on purpose: napari would take that for "this writer does not apply" and replace
    the message with "no writer found".
    """


def _reraise_for_napari(func):
    """Re-raise ``VolumeError`` / ``ValueError`` from a writer as :class:`LayerSaveError` (see module doc)."""
    import functools

    @functools.wraps(func)
    def wrapper(path, data, meta):
        try:
            return func(path, data, meta)
        except ValueError as err:
            raise LayerSaveError(str(err)) from None

    return wrapper


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


@_reraise_for_napari
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
        LayerSaveError: wrong suffix, negative or too large label values (``m2f_med.io.write_nifti``), or the
            layer is not 3-D; the message names the file.
    """
    from m2f_med.io.label_names import write_label_names_beside
    from m2f_med.io.writers import write_nifti

    label, _info, _reference, names = _label_volume(data, meta)
    written = [str(write_nifti(label, path, label=True))]
    if names:
        written.append(str(write_label_names_beside(path, names)))
    return written


def seg_export_problem(layer_or_state: Any, data: Any = None, viewer: Any = None) -> str | None:
    """Why a Labels layer cannot be saved as a DICOM-SEG, or ``None`` if it can (checked without writing).

    Args:
        layer_or_state: a napari Labels layer, or its state dict (``layer.as_layer_data_tuple()[1]``).
        data: the layer data when a state is given.
        viewer: the viewer to look for the image underneath (default: the current one).

    Returns:
        A one-line reason a user can act on, e.g. that the series has no StudyInstanceUID, or ``None``.
    """
    from m2f_med.io.volume import SERIES_UID, SOP_UIDS, SOURCE_FORMAT, STUDY_UID

    if hasattr(layer_or_state, "as_layer_data_tuple"):
        data, state, _ = layer_or_state.as_layer_data_tuple()
    else:
        state = layer_or_state
    arr = np.asarray(data)
    if arr.ndim != 3:
        return f"only 3-D labels can be saved as DICOM-SEG (this layer has shape {arr.shape})"
    info = layer_info(state)
    reference = info.reference if info is not None else None
    if reference is None:
        under = image_under_layer(state, arr.shape, viewer)
        reference = under.volume if under is not None else None
    meta = getattr(reference, "meta", None) or {}
    if reference is None or meta.get(SOURCE_FORMAT) != "dicom" or not meta.get(SOP_UIDS):
        return (
            "a DICOM-SEG must reference the DICOM series the labels were drawn on; these labels belong to no "
            "DICOM series opened with m2f-med (save as NIfTI .nii.gz instead)"
        )
    for key, keyword in ((STUDY_UID, "StudyInstanceUID"), (SERIES_UID, "SeriesInstanceUID")):
        if not str(meta.get(key) or ""):
            return (
                f"the DICOM series has no {keyword} (anonymised?); a DICOM-SEG must reference its study and "
                "series: save as NIfTI .nii.gz instead"
            )
    if not arr.any():
        return "the labels are empty; a DICOM-SEG needs at least one segment"
    return None


def segment_descriptions(
    info: LayerInfo | None, data: np.ndarray, names: Mapping[int, str], values: list[int], colormap: Any = None
) -> dict:
    """Per label value a ``m2f_med.io.dicom_seg.SegmentInfo``: name, colour, algorithm type and name.

    Args:
        info: the layer's :class:`LayerInfo` (``None``: drawn by hand).
        data: the layer data ``(Z', Y', X')`` now (for the edit check).
        names: ``{label value: name}``.
        values: the label values present.
        colormap: the layer's napari colormap: each segment gets the RGB the user saw (else the table's).

    Returns:
        ``{label value: SegmentInfo}`` (see the module docstring for the algorithm types).
    """
    from dataclasses import replace

    from m2f_med.io.dicom_seg import segment_infos

    algorithm = info.algorithm if info is not None and info.algorithm else None
    edited = edited_values(data, info) if algorithm else set()
    infos = segment_infos(
        names, values, algorithm=algorithm, edited=edited, model_values=info.model_values if algorithm else None
    )
    for value, colour in (info.colors if info is not None else {}).items():
        if value in infos:
            infos[value] = replace(infos[value], rgb=tuple(colour))
    if hasattr(colormap, "map") and values:
        rgba = np.asarray(colormap.map(np.asarray(values)), dtype=np.float64)
        for value, colour in zip(values, rgba):
            rgb = tuple(int(c) for c in np.rint(np.clip(colour[:3], 0, 1) * 255))
            infos[value] = replace(infos[value], rgb=rgb)
    return infos


@_reraise_for_napari
def write_labels_dicom_seg(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as a DICOM-SEG that references the DICOM series it was drawn on.

    Segments are named from the layer's features, coloured from the layer's colour table and typed
    AUTOMATIC / SEMIAUTOMATIC / MANUAL (:func:`segment_descriptions`; DICOM PS3.3 C.8.20.2).

    Args:
        path: output ``.dcm`` file.
        data: the layer data ``(Z', Y', X')``.
        meta: the layer state napari passes.

    Returns:
        ``[path]``.

    Raises:
        LayerSaveError: the labels cannot become a SEG (:func:`seg_export_problem`: no DICOM series, a
            series without Study/SeriesInstanceUID, empty labels) or ``m2f_med.io.write_dicom_seg`` refuses
            them; the message names the file and the problem.
    """
    from m2f_med.io.dicom_seg import write_dicom_seg
    from m2f_med.io.errors import VolumeError

    problem = seg_export_problem(meta, data)
    if problem:
        raise VolumeError(path, problem)
    label, info, reference, names = _label_volume(data, meta)
    arr = np.asarray(data)
    counts = np.bincount(arr.reshape(-1).astype(np.int64))
    values = [int(v) for v in np.flatnonzero(counts) if v != 0]
    segments = segment_descriptions(info, arr, names, values, meta.get("colormap"))
    return [str(write_dicom_seg(label, reference, path, labels=names, segments=segments))]
