"""m2f-med volumes ↔ napari layer data tuples, carrying the source geometry in ``layer.metadata``.

Every layer the plugin makes holds ``metadata["m2f_med"]``, a :class:`LayerInfo`: the display geometry
(``_geometry.DisplayGeometry``), the source volume's meta, and for label maps the structure names, the
model confidences and the reference image volume (needed to write a DICOM-SEG). Writers use it to put a
Labels layer back on its exact source grid and affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from m2f_med.io.volume import FOR_UID, MODALITY, SERIES_UID, SOURCE_FORMAT, STUDY_UID, make_volume
from napari_m2f_med._colors import label_colormap
from napari_m2f_med._geometry import (
    DisplayGeometry,
    display_geometry,
    geometry_from_layer_state,
    napari_affine_from_state,
)

__all__ = [
    "META_KEY",
    "LayerInfo",
    "image_layer_data",
    "labels_layer_data",
    "label_features",
    "layer_info",
    "label_fingerprints",
    "edited_values",
    "labels_volume_from_layer",
    "ct_contrast_limits",
]

META_KEY = "m2f_med"
"""Key of :class:`LayerInfo` in ``layer.metadata``."""

# Soft-tissue window (W 400 / L 40 HU), the usual first look at an abdominal CT.
_CT_WINDOW = (-160.0, 240.0)
# layer transforms equal to the recorded geometry within this (mm) are taken to be unchanged
_SAME_TRANSFORM_MM = 1e-6


@dataclass
class LayerInfo:
    """What the plugin knows about a layer beyond its pixels.

    Attributes:
        geometry: how the source ``(X, Y, Z)`` grid is shown (see ``_geometry``).
        meta: the source volume's ``.meta`` (modality, source format, DICOM UIDs, problems, ...).
        kind: ``"image"`` or ``"labels"``.
        volume: for images, the source ``MetaTensor`` ``(C, X, Y, Z)`` whose storage the layer shows.
        reference: for labels, the image volume the labels belong to (``None`` if unknown).
        names: for labels, ``{label id: structure name}``.
        confidence: for model output, ``{label id: confidence 0–1}`` from the query scores.
        series: for images read from a DICOM folder, the other image series found there, as
            ``[(SeriesInstanceUID, description)]``, so the user can pick another.
        series_root: the DICOM folder the image was read from (``""`` otherwise).
        algorithm: for labels made by a model (or read from a SEG that names one), the algorithm name written
            to DICOM-SEG (``""``: drawn by hand).
        model_values: the label values the algorithm produced.
        fingerprints: ``{label value: fingerprint}`` of the voxels as the algorithm left them
            (:func:`label_fingerprints`); a value whose voxels changed since is saved SEMIAUTOMATIC.
        edited: label values already known to be edited by hand (e.g. SEMIAUTOMATIC in a SEG read back).
        colors: ``{label value: (r, g, b)}`` that override the shared table (colours of a foreign SEG).
    """

    geometry: DisplayGeometry
    meta: dict[str, Any]
    kind: str
    volume: MetaTensor | None = None
    reference: MetaTensor | None = None
    names: dict[int, str] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    series: list[tuple[str, str]] = field(default_factory=list)
    series_root: str = ""
    algorithm: str = ""
    model_values: set[int] = field(default_factory=set)
    fingerprints: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    edited: set[int] = field(default_factory=set)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)


def label_fingerprints(array: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """A cheap change detector per label value: voxel count and two index-weighted sums, in one pass each.

    Args:
        array: integer label array (any shape; the display or the source order, used consistently).

    Returns:
        ``{label value: (count, sum of flat indices, sum of hashed flat indices)}`` for every value > 0. Any
        paint, erase or fill that changes a label's voxel set changes its fingerprint (except by a
        vanishingly unlikely collision of both sums).
    """
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        return {}
    values = flat.astype(np.int64, copy=False)
    index = np.arange(flat.size, dtype=np.float64)
    counts = np.bincount(values)
    sums = np.bincount(values, weights=index)
    hashed = np.bincount(values, weights=(np.arange(flat.size, dtype=np.int64) * 2654435761) % 1000003)
    return {
        int(v): (int(counts[v]), int(sums[v]), int(hashed[v])) for v in np.flatnonzero(counts) if v != 0
    }


def edited_values(array: np.ndarray, info: LayerInfo) -> set[int]:
    """Label values of a model result whose voxels differ from what the model produced.

    Args:
        array: the Labels layer data now (same order as when the fingerprints were taken).
        info: the layer's :class:`LayerInfo`.

    Returns:
        The edited values (a value the model made that is now gone counts as edited), with ``info.edited``.
    """
    now = label_fingerprints(array)
    changed = {v for v in info.model_values if now.get(v) != info.fingerprints.get(v)}
    return changed | set(info.edited)

def layer_info(layer_or_meta: Any) -> LayerInfo | None:
    """The :class:`LayerInfo` of a napari layer, a layer state dict, or a metadata dict; ``None`` if absent."""
    metadata = getattr(layer_or_meta, "metadata", None)
    if metadata is None and isinstance(layer_or_meta, Mapping):
        metadata = layer_or_meta.get("metadata", layer_or_meta)
    info = (metadata or {}).get(META_KEY)
    return info if isinstance(info, LayerInfo) else None


def _as_numpy(volume: torch.Tensor) -> np.ndarray:
    """The ``(C, X, Y, Z)`` storage of a CPU volume as numpy, without a copy."""
    return torch.as_tensor(volume).detach().cpu().numpy()


def ct_contrast_limits(array: np.ndarray, modality: str) -> tuple[float, float]:
    """Initial display window: soft tissue (W 400 / L 40 HU) for CT, the 0.5–99.5 % range otherwise.

    A file without a modality (NIfTI, NRRD) is taken to be CT in HU when its 0.5 % quantile lies below
    ``-500`` (air at about -1000 HU); MR and PET intensities are not negative.
    """
    sample = np.asarray(array[:: max(1, array.shape[0] // 32)], dtype=np.float32)
    lo, hi = np.percentile(sample, [0.5, 99.5]) if sample.size else (0.0, 1.0)
    if modality.upper() == "CT" or (not modality and lo < -500):
        return _CT_WINDOW
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def image_layer_data(
    volume: MetaTensor,
    name: str | None = None,
    series: list[tuple[str, str]] | None = None,
    series_root: str | None = None,
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """napari layer data tuples for an image volume, one per channel.

    Args:
        volume: ``MetaTensor`` ``(C, X, Y, Z)`` with an RAS affine (mm) on the CPU.
        name: layer name (default: the series description or file stem from the meta).
        series: the other series of the DICOM folder, for the "choose another series" option.
        series_root: the DICOM folder the volume was read from.

    Returns:
        ``[(data (Z', Y', X') view, kwargs, "image")]``; kwargs include scale/translate/affine in mm
        (``_geometry`` convention), a CT soft-tissue window and ``metadata["m2f_med"]``.
    """
    array = _as_numpy(volume)
    geom = display_geometry(np.asarray(volume.affine, dtype=np.float64), array.shape[1:])
    meta = dict(volume.meta)
    modality = str(meta.get(MODALITY, "") or "")
    base = name or _default_name(meta, "image")
    layers = []
    for c in range(array.shape[0]):
        shown = geom.to_display(array[c])
        info = LayerInfo(
            geom, meta, "image", volume=volume, series=list(series or []), series_root=str(series_root or "")
        )
        kwargs = dict(
            geom.layer_kwargs(),
            name=base if array.shape[0] == 1 else f"{base} [{c}]",
            colormap="gray",
            contrast_limits=ct_contrast_limits(shown, modality),
            metadata={META_KEY: info},
        )
        layers.append((shown, kwargs, "image"))
    return layers


def label_features(
    names: Mapping[int, str], confidence: Mapping[int, float] | None = None
) -> dict[str, list]:
    """Labels-layer features table: one row per label id (0 = background) with ``name`` and ``confidence``.

    Args:
        names: ``{label id: structure name}``.
        confidence: ``{label id: confidence 0–1}``; missing ids get NaN.

    Returns:
        dict of equal-length columns ``index``, ``name``, ``confidence`` for ``Labels(features=...)``.
    """
    ids = sorted({0, *(int(i) for i in names)})
    confidence = confidence or {}
    return {
        "index": ids,
        "name": ["background" if i == 0 else str(names.get(i, f"label {i}")) for i in ids],
        "confidence": [float(confidence.get(i, np.nan)) for i in ids],
    }


def labels_layer_data(
    label: MetaTensor,
    names: Mapping[int, str] | None = None,
    *,
    reference: MetaTensor | None = None,
    confidence: Mapping[int, float] | None = None,
    name: str | None = None,
    algorithm: str | None = None,
    segments: list[Mapping[str, Any]] | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari Labels layer data tuple for a label map.

    Args:
        label: integer ``MetaTensor`` ``(1, X, Y, Z)`` with an RAS affine (mm).
        names: ``{label id: structure name}``; drives the fixed colour table and the features table.
        reference: the image volume the labels were drawn on (kept for DICOM-SEG export).
        confidence: ``{label id: 0–1}`` model confidence per structure.
        name: layer name (default from the meta).
        algorithm: the model that made ``label`` (a model result): its values are fingerprinted so that a
            DICOM-SEG marks edited structures SEMIAUTOMATIC and untouched ones AUTOMATIC.
        segments: the ``meta["segments"]`` of a DICOM-SEG read back (``m2f_med.io.dicom_seg``): their
            algorithm, types and colours are kept.

    Returns:
        ``(data (Z', Y', X') view, kwargs, "labels")``; painting into the layer writes into ``label``.

    Raises:
        ValueError: if ``label`` is not a single-channel integer volume.
    """
    array = _as_numpy(label)
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"a label map must be (1, X, Y, Z); got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"a label map must have an integer dtype; got {array.dtype}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    geom = display_geometry(np.asarray(label.affine, dtype=np.float64), array.shape[1:])
    names = {int(k): str(v) for k, v in (names or {}).items()}
    confidence = {int(k): float(v) for k, v in (confidence or {}).items()}
    info = LayerInfo(
        geom, dict(label.meta), "labels", reference=reference, names=names, confidence=confidence
    )
    shown = geom.to_display(array[0])
    for seg in segments or []:
        value = int(seg["label_value"])
        if seg.get("rgb"):
            info.colors[value] = tuple(int(c) for c in seg["rgb"])
        if seg.get("algorithm_type") in ("AUTOMATIC", "SEMIAUTOMATIC") and seg.get("algorithm_name"):
            algorithm = algorithm or str(seg["algorithm_name"])
            info.model_values.add(value)
            if seg["algorithm_type"] == "SEMIAUTOMATIC":
                info.edited.add(value)
    if algorithm:
        info.algorithm = str(algorithm)
        info.fingerprints = label_fingerprints(shown)
        if not segments:  # values the model produced; a structure it missed and the user drew is MANUAL
            info.model_values = set(info.fingerprints)
    kwargs = dict(
        geom.layer_kwargs(),
        name=name or _default_name(dict(label.meta), "labels"),
        colormap=label_colormap(names, info.colors),
        features=label_features(names, confidence),
        metadata={META_KEY: info},
    )
    return shown, kwargs, "labels"


def _default_name(meta: Mapping[str, Any], fallback: str) -> str:
    desc = str(meta.get("SeriesDescription") or "").strip()
    if desc:
        return desc
    src = str(meta.get("filename_or_obj") or "").rstrip("/")
    stem = src.rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        stem = stem.removesuffix(suffix)
    return stem or fallback


def labels_volume_from_layer(
    data: np.ndarray, state: Mapping[str, Any], under: LayerInfo | None = None
) -> tuple[MetaTensor, LayerInfo | None]:
    """Put a Labels layer back on its source grid: the inverse of :func:`labels_layer_data`.

    If the layer carries m2f-med metadata and its transform is still the one it was shown with, the
    recorded geometry is inverted exactly (same voxel order and the source affine, bit for bit). A layer
    made by napari itself (e.g. "new labels" over an image) takes the geometry of ``under``, the image it
    sits on voxel for voxel. Otherwise (no image underneath, or a layer moved by the user) it is placed by
    its own scale/translate/affine with the display convention.

    Args:
        data: the layer data ``(Z', Y', X')``.
        state: the layer state (``layer.as_layer_data_tuple()[1]`` or an npe2 writer's ``meta``).
        under: the image layer the Labels layer lies on exactly (see ``_context.image_under_layer``).

    Returns:
        ``(label, info)``: ``label`` is an integer ``MetaTensor`` ``(1, X, Y, Z)`` with the source RAS affine
        and meta (``source_format`` kept, so DICOM provenance survives); ``info`` is the
        :class:`LayerInfo` (``None`` when the layer had none).

    Raises:
        ValueError: the layer is not 3-D or its transform is singular.
    """
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"only 3-D Labels layers map to a volume; this one has shape {arr.shape}")
    info = layer_info(state)
    geom = info.geometry if info is not None else None
    if geom is None and under is not None:
        geom = under.geometry
    if geom is not None and (
        tuple(arr.shape) != tuple(geom.display_shape) or not _same_transform(geom, state)
    ):
        geom = None
    if geom is None:
        geom = geometry_from_layer_state(state, arr.shape)
    source = np.ascontiguousarray(geom.from_display(arr))
    meta: dict[str, Any] = {SOURCE_FORMAT: "napari"}
    if info is not None:
        meta = {k: v for k, v in info.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
    elif under is not None and geom is under.geometry:
        meta = {k: under.meta[k] for k in (MODALITY, SERIES_UID, STUDY_UID, FOR_UID) if k in under.meta}
        meta[SOURCE_FORMAT] = "napari"
    return make_volume(source[None], geom.source_affine, **meta), info


def _same_transform(geom: DisplayGeometry, state: Mapping[str, Any]) -> bool:
    """True if the layer is still placed as ``geom`` placed it (the user has not moved or rescaled it)."""
    try:
        current = napari_affine_from_state(state)
    except ValueError:
        return False
    shown = napari_affine_from_state(geom.layer_kwargs())
    return bool(np.allclose(current, shown, atol=_SAME_TRANSFORM_MM, rtol=0))
