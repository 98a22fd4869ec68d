"""A MONAI ``ImageReader`` over the m2f-med io layer, so ``LoadImaged(keys, reader=M2FMedReader)`` reads
DICOM series folders, NIfTI, NRRD, MHA, ... with the geometry rules of ``m2f_med.io.load_volume``.

MONAI's own readers each get some real-world DICOM wrong (see ``docs/ARCHITECTURE.md`` and the io layer);
routing MONAI pipelines through ``load_volume`` keeps training, bundles and batch inference on one reader.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import ImageReader, MetaTensor
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

__all__ = ["M2FMedReader", "DICOM_SUFFIXES"]

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def _has_supported_suffix(path: Path) -> bool:
    from m2f_med.io.image_files import image_format

    return image_format(path) is not None or path.name.lower().endswith(DICOM_SUFFIXES)


class M2FMedReader(ImageReader):
    """MONAI ``ImageReader`` that loads through ``m2f_med.io.load_volume``.

    Contract (``monai/data/image_reader.py::ImageReader``): ``read`` returns the loaded volume(s);
    ``get_data`` returns ``(array, meta)`` with the array ``(C, X, Y, Z)`` (channel first,
    ``meta["original_channel_dim"] = 0``) and meta holding ``affine`` / ``original_affine`` (4×4 voxel →
    RAS mm), ``spatial_shape``, ``space = "RAS"`` and the m2f-med keys of ``m2f_med.io.volume`` (modality,
    SeriesInstanceUID, ...). Several files are concatenated along the channel axis (all must share the grid).

    Args:
        series_uid: for a folder holding several DICOM series, the SeriesInstanceUID to read (passed to
            ``load_volume``); ``None`` lets the io layer's selection rule choose.
        **kwargs: further keyword arguments for ``load_volume`` (``modality``, ``label=True`` for label-map
            files, ``volume_index``).

    Raises (from ``read`` / ``get_data``):
        m2f_med.io.errors.VolumeError: a file is unreadable or not a volume, or the inputs of a multi-file
            read do not share one grid.
    """

    def __init__(self, series_uid: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True if every name is a folder (DICOM series / tree) or has a suffix the io layer reads."""
        paths = [Path(os.fspath(f)) for f in ensure_tuple(filename)]
        return bool(paths) and all(p.is_dir() or _has_supported_suffix(p) for p in paths)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> MetaTensor | list[MetaTensor]:
        """Load each path with ``load_volume``; returns one ``(C, X, Y, Z)`` MetaTensor or a list of them."""
        from m2f_med.io import load_volume

        opts = {**self.kwargs, **kwargs}
        if self.series_uid is not None:
            opts.setdefault("series_uid", self.series_uid)
        vols = [load_volume(os.fspath(p), **opts) for p in ensure_tuple(data)]
        return vols[0] if len(vols) == 1 else vols

    def get_data(self, img: MetaTensor | Sequence[MetaTensor]) -> tuple[np.ndarray, dict]:
        """Array ``(C, X, Y, Z)`` (channels of several volumes concatenated) and its MONAI meta dict."""
        from m2f_med.io.errors import VolumeError

        vols = [img] if isinstance(img, torch.Tensor) else list(img)
        first = vols[0]
        ref_aff = np.asarray(first.affine, dtype=np.float64)
        arrays = []
        problems = list(first.meta.get("problems", []))
        for v in vols:
            same_grid = tuple(v.shape[1:]) == tuple(first.shape[1:]) and np.allclose(
                np.asarray(v.affine, dtype=np.float64), ref_aff, atol=1e-4
            )
            if not same_grid:
                # co-registered volumes on another grid (e.g. PET at 4.7 mm beside CT at 0.98 mm): resample
                # onto the first volume's grid by world position (MONAI SpatialResample, trilinear)
                from monai.transforms import SpatialResample

                if v.shape[0] < 1:
                    raise VolumeError(v.meta.get("filename_or_obj"), "empty volume: cannot stack as channels")
                v = SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)(
                    MetaTensor(v.float(), affine=torch.as_tensor(np.asarray(v.affine, dtype=np.float64))),
                    dst_affine=torch.as_tensor(ref_aff), spatial_size=tuple(int(s) for s in first.shape[1:]),
                )
                problems.append(f"resampled {Path(str(vols[len(arrays)].meta.get('filename_or_obj'))).name} "
                                "onto the first image's grid (trilinear) to stack it as a channel")
            arrays.append(np.asarray(v.detach().cpu().numpy()))
        array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        meta: dict[str, Any] = {k: v for k, v in first.meta.items() if k not in (MetaKeys.AFFINE,)}
        # MONAI's DataLoader collates meta values and fails on None (e.g. FrameNumbers of single-frame
        # DICOM slices): leave such entries out of the MONAI meta (load_volume callers still see them)
        meta = {
            k: v for k, v in meta.items()
            if v is not None and not (isinstance(v, (list, tuple)) and any(x is None for x in v))
        }
        if len(vols) > 1:
            meta["problems"] = problems
        meta[MetaKeys.AFFINE] = ref_aff.copy()
        meta[MetaKeys.ORIGINAL_AFFINE] = np.asarray(
            first.meta.get(MetaKeys.ORIGINAL_AFFINE, ref_aff), dtype=np.float64
        )
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape[1:])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        meta[MetaKeys.SPACE] = SpaceKeys.RAS
        return array, meta
