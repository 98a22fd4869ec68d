"""Writing received instances: one file per SOPInstanceUID, atomically, under sanitised folder names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["instance_path", "save_instance"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _safe(uid: object) -> str:
    """A UID is digits and dots (PS3.5 9.1); anything else (or empty) becomes a short hash, never a path."""
    text = str(uid or "").strip()
    if _UID.match(text) and len(text) <= 64:
        return text
    return "x" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


def instance_path(root: str | Path, ds) -> Path:
    """``root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` for a dataset (UIDs checked)."""
    sop = getattr(ds, "SOPInstanceUID", None) or getattr(getattr(ds, "file_meta", None),
                                                         "MediaStorageSOPInstanceUID", None)
    return (Path(root) / _safe(getattr(ds, "StudyInstanceUID", None))
            / _safe(getattr(ds, "SeriesInstanceUID", None)) / f"{_safe(sop)}.dcm")


def save_instance(root: str | Path, ds) -> Path:
    """Write ``ds`` (a pydicom Dataset with file meta) to :func:`instance_path`, atomically.

    A crash mid-write leaves only a ``.partial`` temporary file (``m2f_med.io.atomic``), never a truncated
    ``.dcm``; what was already written stays.

    Returns:
        The path written.
    """
    from m2f_med.io.atomic import atomic_write

    path = instance_path(root, ds)
    with atomic_write(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
