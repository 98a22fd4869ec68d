"""``load_volume``: one entry point for every image source m2f-med reads.

Dispatch rules:

* a file with an image suffix (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.gipl`` ...) →
  ``m2f_med.io.image_files.load_image_file``;
* any other file that is DICOM → the series it belongs to: its folder (recursively) is indexed and the series
  with the file's SeriesInstanceUID is loaded (a file whose series cannot be found there is loaded alone);
  an RTSTRUCT or SEG is refused here, since it needs a reference grid (``load_rtstruct``, ``read_dicom_seg``);
* a folder → ``index_dicom_tree`` + ``select_series`` (its documented rules; ``series_uid`` and
  ``modality`` narrow the choice) + ``load_dicom_series``. When the folder held several image series, the
  choice is noted in ``meta["problems"]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import image_format, load_image_file
from m2f_med.io.volume import add_problem

if TYPE_CHECKING:  # MONAI takes seconds to import; make_volume imports it when it builds a MetaTensor
    from monai.data import MetaTensor

__all__ = ["load_volume", "dicom_object_kind"]


def dicom_object_kind(path: str | os.PathLike) -> str | None:
    """What a single DICOM file is: ``"image"``, ``"SEG"``, ``"RTSTRUCT"``, ... or ``None`` if not DICOM.

    Args:
        path: a file.

    Returns:
        ``m2f_med.io.dicom_index.sop_class_kind`` of its SOP class (headers only), or ``None`` for a
        non-DICOM file.
    """
    from m2f_med.io.dicom_index import looks_like_dicom, read_header, sop_class_kind, sop_class_of

    p = Path(path)
    if not p.is_file() or not looks_like_dicom(p):
        return None
    try:
        ds = read_header(p, ["SOPClassUID", "Modality"])
    except VolumeError:
        return None
    kind = sop_class_kind(sop_class_of(ds))
    if kind == "image" and str(ds.get("Modality", "")).upper() in ("SEG", "RTSTRUCT"):
        kind = str(ds.Modality).upper()  # a SOP class we do not know, but the modality says it
    return kind


def load_volume(
    path: str | os.PathLike,
    series_uid: str | None = None,
    modality: str | None = None,
    *,
    label: bool = False,
    volume_index: int | None = None,
) -> MetaTensor:
    """Load an image file, a DICOM file's series, or the main series of a DICOM folder.

    Args:
        path: a NIfTI/NRRD/MHA/GIPL file, a DICOM file, or a folder of DICOM files (searched recursively).
        series_uid: SeriesInstanceUID to take from a folder (ignored for image files).
        modality: required Modality when choosing a series in a folder (``"CT"``, ``"MR"`` ...; ``None``:
            any); for image files it is recorded in ``meta["modality"]``.
        label: image files only: the file is a label map (keep integers; see ``load_image_file``).
        volume_index: image files only: which volume of a 4-D file to take.

    Returns:
        ``MetaTensor`` ``(1, X, Y, Z)`` with an RAS affine (mm) and the meta of ``m2f_med.io.volume``.

    Raises:
        VolumeError: the path does not exist, is not a supported file, is an RTSTRUCT/SEG, or the reader
            fails (see ``load_image_file``, ``load_dicom_series``).
        NoSeriesError / AmbiguousSeriesError: a folder without an image series, or with several that the
            rules of ``select_series`` cannot decide between (the error lists them; pass ``series_uid``).

    See Also:
        ``m2f_med.io.series_selection`` for the series rules; ``docs/ARCHITECTURE.md`` for the volume contract.
    """
    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "no such file or folder")
    if p.is_dir():
        return _load_folder(p, series_uid, modality)
    if image_format(p) is not None:
        return load_image_file(p, label=label, volume_index=volume_index, modality=modality)
    kind = dicom_object_kind(p)
    if kind is None:
        raise VolumeError(p, "not a supported image file (NIfTI, NRRD, MHA, GIPL) and not DICOM")
    if kind in ("SEG", "RTSTRUCT"):
        raise VolumeError(
            p, f"is a DICOM {kind}, not an image; read it onto a reference grid (convert ... --reference SERIES)"
        )
    return _load_dicom_file(p, series_uid)


def _load_folder(folder: Path, series_uid: str | None, modality: str | None) -> MetaTensor:
    from m2f_med.io.dicom_index import index_dicom_tree
    from m2f_med.io.dicom_series import load_dicom_series
    from m2f_med.io.series_selection import select_series, series_exclusion

    index = index_dicom_tree(folder)
    chosen = select_series(index, modality=modality, series_uid=series_uid)
    vol = load_dicom_series(chosen)
    images = [s for s in index.series if series_exclusion(s, allow_derived=True) is None]
    if series_uid is None and len(images) > 1:
        add_problem(
            vol,
            f"chose series {chosen.series_uid} ({chosen.modality}, {chosen.n_images} images) of "
            f"{len(images)} image series by the selection rules",
        )
    return vol


def _load_dicom_file(p: Path, series_uid: str | None) -> MetaTensor:
    from m2f_med.io.dicom_index import index_dicom_tree, read_header
    from m2f_med.io.dicom_series import load_dicom_series

    uid = str(read_header(p, ["SeriesInstanceUID"]).get("SeriesInstanceUID", "") or "")
    if series_uid and uid and series_uid != uid:
        raise VolumeError(p, f"this file belongs to series {uid}, not {series_uid}")
    series = index_dicom_tree(p.parent).get(uid) if uid else None
    if series is None or not any(Path(i.path).resolve() == p.resolve() for i in series.instances):
        return load_dicom_series([p])
    return load_dicom_series(series)
