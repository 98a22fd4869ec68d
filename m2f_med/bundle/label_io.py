"""Loading a case's label, whatever its form: a label-map file, a DICOM-SEG or an RTSTRUCT.

A label map (NIfTI, NRRD, ...) carries its own grid; a DICOM-SEG may and an RTSTRUCT never does: its
contours are drawn onto the image they belong to. ``LoadImaged`` loads each key on its own (and falls back
to other readers when one fails, so a SEG would come back as a stack of frames), so labels go through this
transform instead, after the image: it hands the loaded image to the io layer as the reference grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from m2f_med.bundle.datalist import LABEL_NAMES_KEY
from m2f_med.io.errors import VolumeError

__all__ = ["LoadLabeld", "snake_case"]


def _collatable(value: Any) -> Any:
    """``value`` with every nested ``None`` replaced by ``""`` (PyTorch's default collate refuses None)."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return {k: _collatable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_collatable(v) for v in value)
    return value


def snake_case(name: str) -> str:
    """``"Liver"`` → ``"liver"``, ``"Kidney Left"`` → ``"kidney_left"`` (names as TotalSegmentator spells them)."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


def load_label(path: str | os.PathLike, reference: MetaTensor | None) -> tuple[MetaTensor, dict[int, str]]:
    """Read one label source as a ``(1, X, Y, Z)`` label map.

    Args:
        path: a label-map file (NIfTI, NRRD, MHA, ...), a DICOM label series folder, a DICOM-SEG file or an
            RTSTRUCT file.
        reference: the case's image ``(C, X, Y, Z)`` (RAS affine, mm); required for an RTSTRUCT, and a SEG is
            resampled onto it (nearest neighbour, by world position).

    Returns:
        ``(label, names)``: the label map (MetaTensor, RAS affine, integer values) and the names the file gives
        its ids (SEG SegmentLabel / RTSTRUCT ROIName, as written; ``{}`` for label-map files).

    Raises:
        VolumeError: unreadable file, an RTSTRUCT without a reference image, or a SEG/RTSTRUCT in another
            frame of reference (from ``m2f_med.io``).
    """
    from m2f_med.io import load_rtstruct, load_volume, read_dicom_seg
    from m2f_med.io.image_files import image_format
    from m2f_med.io.loader import dicom_object_kind

    p = Path(path)
    if p.is_file() and image_format(p) is None:
        kind = dicom_object_kind(p)
        if kind == "SEG":
            return read_dicom_seg(p, reference=reference)
        if kind == "RTSTRUCT":
            if reference is None:
                raise VolumeError(p, "an RTSTRUCT label needs the case's image as reference grid")
            return load_rtstruct(p, reference)
    return load_volume(p, label=True), {}


class LoadLabeld(MapTransform):
    """Load label paths into ``(1, X, Y, Z)`` MetaTensors, reading SEG/RTSTRUCT onto the loaded image's grid.

    Place it after ``LoadImaged`` of ``image_key``. When the datalist entry gives no ``label_names`` and the
    file names its ids (SEG segment labels, RTSTRUCT ROI names), those names, in snake_case, become the case's
    ``label_names`` for :class:`~m2f_med.bundle.labels.RemapLabelsByNamed`.

    Args:
        keys: keys holding label paths (str / ``os.PathLike``).
        image_key: key of the already loaded image (MetaTensor) used as the reference grid.
        names_key: data key of the case's ``{source_id: name}``.
        allow_missing_keys: don't raise if a label key is missing (e.g. cases without labels).

    Raises (from ``__call__``):
        VolumeError: see :func:`load_label`.

    See Also:
        ``m2f_med.io.read_dicom_seg`` (DICOM PS3.3 C.8.20), ``m2f_med.io.load_rtstruct`` (C.8.8.5–6),
        ``m2f_med.io.load_volume``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        names_key: str = LABEL_NAMES_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.names_key = names_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        reference = d.get(self.image_key)
        reference = reference if isinstance(reference, MetaTensor) else None
        for key in self.key_iterator(d):
            label, names = load_label(d[key], reference)
            label.meta["original_channel_dim"] = 0  # already channel-first: EnsureChannelFirstd keeps it
            # DataLoader's collate refuses None (a SEG's segments carry optional fields as None)
            for mkey, value in list(label.meta.items()):
                label.meta[mkey] = _collatable(value)
            d[key] = label
            if names and not d.get(self.names_key):
                d[self.names_key] = {str(i): snake_case(n) for i, n in names.items()}
        return d
