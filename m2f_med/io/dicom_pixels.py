"""DICOM pixel data: decode any transfer syntax pydicom's plugins can read, then map stored values to
modality values (HU for CT) in floating point.

Decoding is pydicom's (``Dataset.pixel_array`` with the pylibjpeg / pyjpegls / Pillow plugins, see
``/work/shared/FACTS.md``): uncompressed little/big endian, deflate, RLE, JPEG baseline/extended/lossless,
JPEG-LS, JPEG 2000 and HTJ2K. A syntax without a usable decoder raises ``DecoderMissingError`` naming the
syntax and the package to install, before any decoding is tried.

The rescale (DICOM PS3.3 C.11.1.1.2, ``value = stored * RescaleSlope + RescaleIntercept``) is computed in
float64 and stored as float32, so unsigned storage with a negative intercept and int16 extremes cannot
overflow; every 16-bit value times a slope of 1 is exact in float32.
"""

from __future__ import annotations

import os

import numpy as np
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.pixels.processing import apply_modality_lut

from m2f_med.io.errors import DecoderMissingError, VolumeError

__all__ = [
    "DECODER_PACKAGES",
    "transfer_syntax",
    "ensure_transfer_syntax",
    "check_decoder",
    "decode_frames",
    "rescale",
    "invert_monochrome1",
    "modality_values",
]

_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg pylibjpeg-openjpeg"

# pip packages that give pydicom a decoder for each compressed transfer syntax (pydicom 3 decoder plugins).
DECODER_PACKAGES: dict[str, str] = {
    dcm_uid.RLELossless: "pylibjpeg pylibjpeg-rle",
    dcm_uid.JPEGBaseline8Bit: f"{_LIBJPEG} (or pillow)",
    dcm_uid.JPEGExtended12Bit: f"{_LIBJPEG} (or pillow)",
    dcm_uid.JPEGLossless: _LIBJPEG,
    dcm_uid.JPEGLosslessSV1: _LIBJPEG,
    dcm_uid.JPEGLSLossless: f"{_LIBJPEG} (or pyjpegls)",
    dcm_uid.JPEGLSNearLossless: f"{_LIBJPEG} (or pyjpegls)",
    dcm_uid.JPEG2000Lossless: f"{_OPENJPEG} (or pillow)",
    dcm_uid.JPEG2000: f"{_OPENJPEG} (or pillow)",
    dcm_uid.HTJ2KLossless: _OPENJPEG,
    dcm_uid.HTJ2KLosslessRPCL: _OPENJPEG,
    dcm_uid.HTJ2K: _OPENJPEG,
}
# Syntaxes pydicom has no decoder interface for at all (JPEG 2000 Part 2, MPEG, ...).
_NO_PLUGIN = "python-gdcm (pydicom has no plugin for it), or convert the files first with `gdcmconv --raw`"


def transfer_syntax(ds: Dataset) -> dcm_uid.UID:
    """The dataset's TransferSyntaxUID (file meta). A file without one (no file meta: old CD exports, files
    without the 128-byte preamble) gets the syntax pydicom inferred while reading it with ``force=True``
    (``Dataset.original_encoding``: implicit/explicit VR, little/big endian), Implicit VR Little Endian if
    nothing was inferred (PS3.5 A.1, the default syntax)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return dcm_uid.UID(str(ts))
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or implicit:
        return dcm_uid.ImplicitVRLittleEndian
    return dcm_uid.ExplicitVRLittleEndian if little or little is None else dcm_uid.ExplicitVRBigEndian


def _undefined_length(ds: Dataset, keyword: str) -> bool:
    if keyword not in ds:
        return False
    elem = ds.get_item(keyword)  # raw when deferred: no value is read
    return getattr(elem, "length", None) == 0xFFFFFFFF or bool(getattr(elem, "is_undefined_length", False))


def ensure_transfer_syntax(ds: Dataset, path: str | os.PathLike | None = None) -> None:
    """Give a dataset read without file meta the TransferSyntaxUID inferred by ``transfer_syntax`` (in
    memory only; the file is not touched), so that pydicom can decode its pixel data.

    Raises:
        VolumeError: the pixel data is encapsulated (compressed), whose syntax cannot be inferred without
            the file meta.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    if _undefined_length(ds, "PixelData"):
        raise VolumeError(path, "compressed (encapsulated) pixel data in a file without file meta: the transfer "
                                "syntax is unknown; rewrite it with its meta (e.g. `dcmconv` or `gdcmconv`)")
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax(ds)


def _describe(ts: dcm_uid.UID) -> str:
    name = ts.name if ts.name != str(ts) else "unknown transfer syntax"
    return f"{ts} ({name})"


def check_decoder(ds: Dataset, path: str | os.PathLike | None = None) -> None:
    """Raise if pydicom cannot decode this dataset's pixel data with the installed plugins.

    Args:
        ds: a dataset with pixel data.
        path: its file, for the error message.

    Raises:
        DecoderMissingError: no decoder for the transfer syntax, or its plugins are not installed; the
            message names the syntax (UID and name) and the pip package(s) that add one.
    """
    ts = transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DecoderMissingError(path, _describe(ts), DECODER_PACKAGES.get(ts, _NO_PLUGIN)) from None
    if not decoder.is_available:
        raise DecoderMissingError(path, _describe(ts), DECODER_PACKAGES.get(ts, _NO_PLUGIN))


def decode_frames(ds: Dataset, path: str | os.PathLike | None = None) -> np.ndarray:
    """Decode the stored pixel values of every frame.

    Args:
        ds: a grayscale image dataset (SamplesPerPixel 1), single- or multi-frame.
        path: its file, for error messages.

    Returns:
        ``(F, Rows, Columns)`` array of stored values in the decoder's integer (or float) dtype; F = 1 for a
        single-frame image. Not rescaled, not inverted.

    Raises:
        DecoderMissingError: see ``check_decoder``.
        VolumeError: no pixel data, colour data, or the data cannot be decoded (truncated, corrupt).
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise VolumeError(path, "no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise VolumeError(path, f"colour image (SamplesPerPixel {ds.SamplesPerPixel}); only grayscale is supported")
    ensure_transfer_syntax(ds, path)
    check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom and its plugins raise many types for corrupt data
        raise VolumeError(path, f"cannot decode pixel data ({_describe(transfer_syntax(ds))}): {e}") from e
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        return arr.reshape(-1, rows, cols)
    except ValueError as e:
        raise VolumeError(path, f"pixel data of shape {arr.shape} does not fit Rows {rows} x Columns {cols}") from e


def rescale(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Modality rescale ``stored * slope + intercept`` (PS3.3 C.11.1.1.2) in float64, returned as float32.

    Args:
        stored: stored values, any numeric dtype and shape.
        slope: RescaleSlope.
        intercept: RescaleIntercept (HU offset for CT, e.g. -1024).

    Returns:
        float32 array of the same shape; the input is not modified.
    """
    out = stored.astype(np.float64) * float(slope)
    out += float(intercept)
    return out.astype(np.float32)


def invert_monochrome1(stored: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Turn MONOCHROME1 stored values into MONOCHROME2 ones (the minimum becomes the maximum).

    MONOCHROME1 means "lowest value displayed white" (PS3.3 C.7.6.3.1.2). Inverting the stored values within
    their range before the rescale is what GDCM and ITK's GDCMImageIO do: ``(2**BitsStored - 1) - v`` for
    unsigned data, ``-1 - v`` (the bitwise complement, which maps the signed range onto itself) for signed.

    Args:
        stored: stored values.
        bits_stored: BitsStored.
        signed: PixelRepresentation is 1.

    Returns:
        int64 array (never overflows), input unchanged.
    """
    v = stored.astype(np.int64)
    return (-1 - v) if signed else ((1 << int(bits_stored)) - 1) - v


def modality_values(stored: np.ndarray, ds: Dataset, slope: float | None = None, intercept: float | None = None) -> np.ndarray:
    """Stored values of one image -> float32 modality values (HU for CT), MONOCHROME1 inverted first.

    Args:
        stored: ``(..., Rows, Columns)`` stored values of this dataset.
        ds: the dataset (PhotometricInterpretation, BitsStored, PixelRepresentation, Modality LUT / rescale).
        slope: RescaleSlope to use instead of the dataset's (enhanced multi-frame: per-frame value).
        intercept: RescaleIntercept likewise.

    Returns:
        float32 array of ``stored``'s shape. Without any rescale information the stored values are returned
        as float32. A Modality LUT Sequence is applied with pydicom's ``apply_modality_lut``.
    """
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        stored = invert_monochrome1(stored, bits, int(ds.get("PixelRepresentation", 0) or 0) == 1)
    if slope is None and intercept is None:
        if ds.get("ModalityLUTSequence"):
            return apply_modality_lut(stored, ds).astype(np.float32)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    slope = 1.0 if slope in (None, "") else float(slope)
    intercept = 0.0 if intercept in (None, "") else float(intercept)
    return rescale(stored, slope, intercept)
