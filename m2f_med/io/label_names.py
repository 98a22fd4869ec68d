"""Structure names of a NIfTI label map, kept in a JSON sidecar file.

NIfTI has no place for label names, so m2f-med writes them beside the mask as ``{"1": "liver", ...}``
(TotalSegmentator's snake_case names): ``<stem>.labels.json`` for a mask saved from napari, and
``labels.json`` in a ``m2f-med predict`` series folder. Readers look for the first, then the second.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from m2f_med.io.atomic import atomic_write
from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import IMAGE_SUFFIXES

__all__ = ["label_names_path", "read_label_names_beside", "write_label_names_beside"]


def label_names_path(image_path: str | os.PathLike) -> Path:
    """``mask.nii.gz`` → ``mask.labels.json`` in the same folder."""
    p = Path(image_path)
    name = p.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}.labels.json")


def read_label_names_beside(image_path: str | os.PathLike) -> dict[int, str]:
    """The ``{label id: name}`` sidecar of a label map, or ``{}`` if there is none.

    Args:
        image_path: the label map file.

    Returns:
        ``{int id: str name}`` from ``<stem>.labels.json``, else from ``labels.json`` in the same folder when
        that is such a mapping (a folder's ``labels.json`` in another format is ignored).

    Raises:
        VolumeError: ``<stem>.labels.json`` exists but is not a JSON object of ``"id": "name"`` pairs.
    """
    p = Path(image_path)
    own = label_names_path(p)
    if own.is_file():
        names = _parse(own)
        if names is None:
            raise VolumeError(own, 'not a label-name file {"1": "liver", ...}')
        return names
    shared = p.with_name("labels.json")
    # a folder's labels.json may be some other tool's description of the data: use it only if it is ours
    return (_parse(shared) or {}) if shared.is_file() else {}


def _parse(path: Path) -> dict[int, str] | None:
    """``{id: name}`` if the file is a JSON object of integer keys and plain values, else ``None``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or any(isinstance(v, (dict, list)) for v in raw.values()):
            return None
        return {int(k): str(v) for k, v in raw.items()}
    except (ValueError, UnicodeDecodeError):  # not JSON, or a key that is not an integer
        return None


def write_label_names_beside(image_path: str | os.PathLike, names: Mapping[int, str]) -> Path:
    """Write ``<stem>.labels.json`` beside a label map, atomically.

    Args:
        image_path: the label map file (need not exist yet).
        names: ``{label id: name}``.

    Returns:
        The sidecar path.
    """
    out = label_names_path(image_path)
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps({str(int(k)): str(v) for k, v in sorted(names.items())}, indent=1) + "\n",
                       encoding="utf-8")
    return out
