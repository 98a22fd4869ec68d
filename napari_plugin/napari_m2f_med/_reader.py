"""npe2 readers: DICOM folders and files, NIfTI / NRRD / MHA, DICOM-SEG and RTSTRUCT, all through ``m2f_med.io``.

* A folder: the DICOM series in it are indexed (``index_dicom_tree``) and the main one is chosen with the
  library's selection rules (``select_series``, any modality, axial preferred, most images). When the rules
  do not decide, the first tied candidate is opened and a note is logged. The other image series are listed
  in the image layer's metadata; the "Series" widget opens another one.
* A single DICOM file: a SEG or RTSTRUCT is opened as a Labels layer on its reference series (an image
  layer already open in the viewer, else the series found in the file's folder or the folder above, which
  is then opened too); any other DICOM file opens the series it belongs to.
* NIfTI / NRRD / MHA / GIPL files (``m2f_med.io.image_files``): label maps become Labels layers, everything
  else an Image layer. A file is taken to be a label map when all its values are whole numbers ≥ 0 and
  either its name says so (``seg``, ``label``, ``mask``, ``roi``, ``gtv``) or it holds at most
  ``MAX_UNNAMED_LABELS`` distinct values (CT holds negative HU; MR holds hundreds of grey values).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2f_med._context import image_on_same_grid, open_images
from napari_m2f_med._layers import image_layer_data, labels_layer_data, layer_info

__all__ = [
    "get_reader",
    "read_path",
    "read_dicom_folder",
    "read_image_file",
    "read_dicom_file",
    "series_label",
    "MAX_UNNAMED_LABELS",
]

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]

MAX_UNNAMED_LABELS = 32
"""A whole-number, non-negative file without a label-ish name is a label map up to this many values."""

_LABEL_NAME = re.compile(r"(^|[^a-z])(seg|segmentation|label|labels|mask|roi|gtv)([^a-z]|$)", re.IGNORECASE)
# files looked at when deciding whether a folder holds DICOM at all
_PROBE_FILES = 200


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """npe2 ``get_reader`` hook: a reader function if m2f-med can open ``path``, else ``None``.

    Args:
        path: one path (file or folder), or a list holding one path.

    Returns:
        :func:`read_path`, or ``None`` for several paths, unknown suffixes and folders without DICOM files.
    """
    if not isinstance(path, (str, os.PathLike)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return read_path if _folder_has_dicom(p) else None
    from m2f_med.io.image_files import image_format

    if image_format(p) is not None:
        return read_path
    return read_path if _is_dicom_file(p) else None


def read_path(path: str | Sequence[str]) -> list[LayerData]:
    """Read one path into napari layer data tuples (see the module docstring for the rules).

    Args:
        path: a DICOM folder, a DICOM file, or an image file; or a list holding one such path.

    Returns:
        List of ``(data, kwargs, layer_type)``; geometry in ``kwargs`` (``_geometry`` convention).

    Raises:
        m2f_med.io.errors.VolumeError: the file or folder cannot be read (the message names it).
    """
    from napari_m2f_med._viewer import watch_viewer

    if not isinstance(path, (str, os.PathLike)):
        path = path[0]
    watch_viewer()  # units on every layer, view fitted after an image arrives
    p = Path(path)
    if p.is_dir():
        return read_dicom_folder(p)
    from m2f_med.io.image_files import image_format

    if image_format(p) is not None:
        return read_image_file(p)
    return read_dicom_file(p)


def _folder_has_dicom(folder: Path) -> bool:
    """True if one of the first ``_PROBE_FILES`` files under ``folder`` (sorted walk) is DICOM."""
    looked = 0
    for dirpath, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if _is_dicom_file(Path(dirpath) / name):
                return True
            looked += 1
            if looked >= _PROBE_FILES:
                return False
    return False


def _is_dicom_file(path: Path) -> bool:
    from pydicom.misc import is_dicom

    try:
        return path.is_file() and is_dicom(path)
    except OSError:
        return False


_UID_TAIL = 12
"""Characters of a SeriesInstanceUID shown at the end of a series' line (the rest is elided)."""


def series_label(series: Any) -> str:
    """A short line for a series: description, modality, image count first; the UID last and elided.

    Args:
        series: an ``m2f_med.io.dicom_index.SeriesInfo``.

    Returns:
        e.g. ``"Abdomen 1.0 B30f · CT · 20 images · …4567.89"`` (no patient data).
    """
    uid = str(series.series_uid)
    tail = uid if len(uid) <= _UID_TAIL + 1 else "…" + uid[-_UID_TAIL:]
    description = str(series.description or "").strip() or "(no description)"
    return f"{description} · {series.modality or '?'} · {series.n_images} images · {tail}"


def _series_choices(index, exclude_uid: str | None = None) -> list[tuple[str, str]]:
    from m2f_med.io.series_selection import series_exclusion

    choices = []
    for s in index.series:
        reason = series_exclusion(s, modality=None, allow_derived=True)
        if reason is None and s.series_uid != exclude_uid:
            choices.append((s.series_uid, series_label(s)))
    return choices


def read_dicom_folder(folder: str | os.PathLike, series_uid: str | None = None) -> list[LayerData]:
    """Open the main DICOM series of a folder tree (or ``series_uid``) as an Image layer.

    Args:
        folder: folder searched recursively for DICOM files.
        series_uid: SeriesInstanceUID to open instead of the automatically selected series.

    Returns:
        One Image layer data tuple; ``metadata["m2f_med"].series`` lists the folder's other image series
        and ``.series_root`` holds the folder.

    Raises:
        VolumeError: no image series, or the series cannot be loaded.
    """
    from m2f_med.io.dicom_index import index_dicom_tree
    from m2f_med.io.dicom_series import load_dicom_series
    from m2f_med.io.series_selection import AmbiguousSeriesError, select_series

    root = Path(folder)
    index = index_dicom_tree(root)
    try:
        series = select_series(index, modality=None, series_uid=series_uid)
    except AmbiguousSeriesError as err:
        series = err.candidates[0]
        log.warning(
            "%s: %d series fit equally well; opened the first, choose another in 'Series'",
            root,
            len(err.candidates),
        )
    series_uid = series.series_uid
    volume = load_dicom_series(series)
    # layer name: the series description, else the folder (never the generic "image")
    name = str(series.description or "").strip() or (root.name if root.is_dir() else root.parent.name)
    return image_layer_data(
        volume, name=name or None, series=_series_choices(index, exclude_uid=series_uid), series_root=str(root)
    )


def _looks_like_labels(path: Path, array: np.ndarray) -> bool:
    if array.size == 0 or array.min() < 0:
        return False
    if not np.array_equal(array, np.rint(array)):
        return False
    if _LABEL_NAME.search(path.name.split(".")[0]):
        return True
    return len(np.unique(array)) <= MAX_UNNAMED_LABELS


def read_image_file(path: str | os.PathLike, modality: str | None = None) -> list[LayerData]:
    """Open a NIfTI / NRRD / MHA / GIPL file as an Image or, for a label map, a Labels layer.

    Args:
        path: the file.
        modality: the modality if known (``"CT"`` gives the HU soft-tissue window); files carry none.

    Returns:
        One layer data tuple.

    Raises:
        VolumeError: the file cannot be read.
    """
    from m2f_med.io.image_files import load_image_file
    from m2f_med.io.label_names import read_label_names_beside
    from m2f_med.io.volume import make_volume

    p = Path(path)
    volume = load_image_file(p, modality=modality)
    array = volume.numpy()
    if array.shape[0] == 1 and _looks_like_labels(p, array):
        top = float(array.max())
        dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int64
        meta = {
            k: v for k, v in volume.meta.items() if k not in ("affine", "original_affine", "spatial_shape")
        }
        lesions = _instances_table_beside(p)
        if lesions is not None and lesions.get("qc_settings"):  # the Lesion review QC (m2f_med.inference.lesion_qc)
            meta["lesion_qc"] = dict(lesions["qc_settings"])
            meta["lesion_qc_modality"] = str((lesions.get("qc_scan") or {}).get("modality") or "")
        label = make_volume(array.astype(dtype), np.asarray(volume.affine, dtype=np.float64), **meta)
        reference = image_on_same_grid(label)
        if lesions is not None:  # a lesion result: one id per lesion, its score as confidence
            rows = lesions.get("instances", [])
            names = {int(r["id"]): f"{r.get('class_name', 'lesion')} {r['id']}" for r in rows}
            scores = {int(r["id"]): float(r["score"]) for r in rows}
            algorithm = None if lesions.get("reviewed") else lesions.get("algorithm")
            return [labels_layer_data(label, names, reference=reference, confidence=scores, algorithm=algorithm)]
        return [labels_layer_data(label, read_label_names_beside(p) or None, reference=reference)]
    return image_layer_data(volume)


def _instances_table_beside(path: Path) -> dict | None:
    """The ``instances.json`` of an ``instances.nii.gz`` (or ``<stem>.json`` with the instances format), if any."""
    from m2f_med.inference.instances import INSTANCES_FORMAT, read_instances_json
    from m2f_med.io.errors import VolumeError

    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    for cand in (path.with_name("instances.json") if stem == "instances" else None, path.with_name(f"{stem}.json")):
        if cand is not None and cand.is_file():
            try:
                doc = read_instances_json(cand)
            except VolumeError:
                continue
            if doc.get("format") == INSTANCES_FORMAT and doc.get("instance_map", path.name) == path.name:
                return doc
    return None


def _referenced_uids(path: Path) -> tuple[set[str], str]:
    """SeriesInstanceUIDs a SEG or RTSTRUCT points to, and its FrameOfReferenceUID (PS3.3 C.7.4.1, C.8.8.5)."""
    from m2f_med.io.dicom_index import read_header

    ds = read_header(
        path, ["ReferencedSeriesSequence", "ReferencedFrameOfReferenceSequence", "FrameOfReferenceUID"]
    )
    series = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence") or []}
    frame_of_reference = str(ds.get("FrameOfReferenceUID", "") or "")
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence") or []:
        frame_of_reference = frame_of_reference or str(ref_for.get("FrameOfReferenceUID", "") or "")
        for study in ref_for.get("RTReferencedStudySequence") or []:
            for ser in study.get("RTReferencedSeriesSequence") or []:
                series.add(str(ser.get("SeriesInstanceUID", "")))
    series.discard("")
    return series, frame_of_reference


def _find_reference(path: Path) -> tuple[Any, list[LayerData]]:
    """The image volume a SEG/RTSTRUCT belongs to, and the layers to add for it (empty if already open).

    Looks in the viewer first (same SeriesInstanceUID, then same FrameOfReferenceUID), then in the file's
    folder and the folder above (same series, then same frame of reference).
    """
    from m2f_med.io.dicom_index import index_dicom_tree
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.series_selection import series_exclusion
    from m2f_med.io.volume import FOR_UID, SERIES_UID

    series_uids, frame_of_reference = _referenced_uids(path)
    open_images_ = open_images()
    for match in (
        lambda i: i.meta.get(SERIES_UID) in series_uids,
        lambda i: bool(frame_of_reference) and i.meta.get(FOR_UID) == frame_of_reference,
    ):
        for info in open_images_:
            if match(info):
                return info.volume, []
    for folder in (path.parent, path.parent.parent):
        try:
            index = index_dicom_tree(folder)
        except VolumeError:
            continue
        images = [s for s in index.series if series_exclusion(s, modality=None, allow_derived=True) is None]
        by_uid = [s for s in images if s.series_uid in series_uids]
        by_for = [s for s in images if frame_of_reference and s.frame_of_reference_uid == frame_of_reference]
        chosen = (by_uid or by_for or [None])[0]
        if chosen is not None:
            layers = read_dicom_folder(folder, series_uid=chosen.series_uid)
            return layer_info(layers[0][1]).volume, layers
    return None, []


def seg_without_series_message(path: Path) -> str:
    """What to do when a DICOM-SEG is opened without the CT/MR series it was drawn on."""
    return (
        f"{path}: the CT/MR series this DICOM-SEG refers to is neither open nor in its folder (or the folder "
        "above); the segments are shown on their own, without the image. To see them on the image, open the "
        "series first (File > Open Folder... on its DICOM folder), then open the SEG again."
    )


def _tell(message: str) -> None:
    """A warning notification in napari (and the log)."""
    log.warning("%s", message)
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except ImportError:  # pragma: no cover - napari is there whenever the reader runs
        pass


def read_dicom_file(path: str | os.PathLike) -> list[LayerData]:
    """Open one DICOM file: a SEG or RTSTRUCT as Labels on its series, anything else as its whole series.

    Args:
        path: a DICOM file.

    Returns:
        For SEG/RTSTRUCT: the reference image layer (if it was not open yet) followed by the Labels layer;
        for an image file: the Image layer of its series.

    Raises:
        VolumeError: unreadable file; an RTSTRUCT whose reference series cannot be found (contours need a
            grid to be drawn on).
    """
    from m2f_med.io.dicom_index import index_dicom_tree
    from m2f_med.io.dicom_seg import read_dicom_seg
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.rtstruct import load_rtstruct

    p = Path(path)
    series = index_dicom_tree(p).series[0]
    kinds = set(series.kinds)
    if "SEG" in kinds or "RTSTRUCT" in kinds:
        reference, layers = _find_reference(p)
        if "SEG" in kinds:
            label, names = read_dicom_seg(p, reference)
            if reference is None:
                _tell(seg_without_series_message(p))
        else:
            if reference is None:
                raise VolumeError(
                    p,
                    "cannot find the CT/MR series this RTSTRUCT refers to; open that series first, then the RTSTRUCT",
                )
            label, names = load_rtstruct(p, reference)
        return [
            *layers,
            # "<stem> (SEG)": a NIfTI saved beside it opens as "<stem>", so neither becomes napari's "<stem> [1]"
            labels_layer_data(
                label,
                names,
                reference=reference,
                name=f"{p.stem} ({'SEG' if 'SEG' in kinds else 'RTSTRUCT'})",
                segments=label.meta.get("segments"),
            ),
        ]
    return read_dicom_folder(p.parent, series_uid=series.series_uid)
