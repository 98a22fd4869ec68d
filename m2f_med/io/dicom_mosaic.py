"""Siemens MOSAIC: one 2-D DICOM image holding the slices of a 3-D volume as tiles of a square grid.

Siemens EPI (fMRI, DWI) stores each volume as one image whose ``ImageType`` contains ``MOSAIC``: the
``NumberOfImagesInMosaic`` slices (private CSA image header, Siemens "syngo" layout) are tiles of
``ceil(sqrt(n)) x ceil(sqrt(n))`` in row-major order, the unused tiles at the end are blank, and
ImagePositionPatient is the corner of the whole mosaic, not of the first tile. The geometry follows
``nibabel.nicom.dicomwrappers.MosaicWrapper`` (tile size, corrected position of tile 0, slice normal from the
CSA ``SliceNormalVector``, slice spacing), which is what dcm2niix and dicom2nifti compute too; we use it rather
than re-deriving it. Pixels come from our own decoder (``dicom_pixels``) so every transfer syntax and the
rescale behave as for any other image.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from m2f_med.io.errors import VolumeError

__all__ = ["is_mosaic", "split_mosaic"]


def is_mosaic(ds) -> bool:
    """True when the dataset's ImageType holds ``MOSAIC`` (Siemens mosaic image)."""
    return "MOSAIC" in [str(v).upper() for v in (ds.get("ImageType") or [])]


def split_mosaic(ds, mosaic: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Cut a Siemens MOSAIC image into its slices.

    Args:
        ds: the pydicom dataset (header with the Siemens CSA image header, tag (0029,1010)).
        mosaic: ``(Rows, Columns)`` decoded pixel values of the whole mosaic (any dtype, e.g. float32 after
            rescale).
        path: the file, for messages.

    Returns:
        ``(data, affine_lps)``: ``data`` is ``(X, Y, Z)`` = (tile columns, tile rows, NumberOfImagesInMosaic)
        in ``mosaic``'s dtype, slice k being tile k; ``affine_lps`` maps ``(i, j, k)`` voxel indices (i along a
        row, j down a column, k along the slices) to LPS mm, as ``dicom_stack.plan_stack`` would for a stack
        of the tiles.

    Raises:
        VolumeError: no NumberOfImagesInMosaic in the CSA header, a mosaic size not divisible into tiles, or
            geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) missing.

    See Also:
        ``nibabel.nicom.dicomwrappers.MosaicWrapper`` (``image_position``, ``affine``,
        ``get_unscaled_data``); nibabel docs "Siemens mosaic format".
    """
    with warnings.catch_warnings():  # nibabel warns on import that its DICOM readers are experimental
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import dicomwrappers

    try:
        wrapper = dicomwrappers.MosaicWrapper(ds)
    except (dicomwrappers.WrapperError, KeyError, ValueError, TypeError) as err:
        raise VolumeError(path, f"Siemens MOSAIC image whose CSA header gives no NumberOfImagesInMosaic ({err}): cannot split it into slices") from None
    n, tiles = int(wrapper.n_mosaic), int(wrapper.mosaic_size)
    rows, cols = mosaic.shape
    if rows % tiles or cols % tiles:
        raise VolumeError(path, f"Siemens MOSAIC of {rows}x{cols} pixels cannot hold {n} slices in {tiles}x{tiles} tiles")
    try:
        affine = np.asarray(wrapper.affine, dtype=np.float64)  # (row index, column index, slice) -> LPS mm
    except (dicomwrappers.WrapperError, TypeError, ValueError) as err:
        raise VolumeError(path, f"Siemens MOSAIC image without usable geometry ({err})") from None
    r, c = rows // tiles, cols // tiles
    # tile k sits at tile row k // tiles, tile column k % tiles (MosaicWrapper.get_unscaled_data)
    blocks = mosaic.reshape(tiles, r, tiles, c).transpose(1, 3, 0, 2).reshape(r, c, tiles * tiles)[..., :n]
    data = np.ascontiguousarray(blocks.transpose(1, 0, 2))  # (rows, cols, k) -> (X = cols, Y = rows, k)
    return data, affine[:, [1, 0, 2, 3]]
