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
        ``{int id: str name}`` from ``<stem>.labels.json``, else ``labels.json`` in the same folder.

    Raises:
        VolumeError: a sidecar exists but is not a JSON object of ``"id": "name"`` pairs.
    """
    p = Path(image_path)
    for candidate in (label_names_path(p), p.with_name("labels.json")):
        if candidate.is_file():
            try:
                raw = json.loads(candidate.read_text(encoding="utf-8"))
                return {int(k): str(v) for k, v in raw.items()}
            except (ValueError, AttributeError, TypeError) as err:
                raise VolumeError(candidate, f"not a label-name file {{\"1\": \"liver\", ...}}: {err}") from None
    return {}


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
