"""Small synthetic DICOM files for the DICOM input tests (pydicom ``Dataset`` written to a temp folder).

Every geometry and pixel value is chosen by the test, so the expected volume is known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

STUDY = generate_uid()
SERIES = generate_uid()
FRAME_OF_REFERENCE = generate_uid()


def _base(sop_class: str, sop_uid: str, transfer_syntax: str, **attrs) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = attrs.pop("study_uid", STUDY)
    ds.SeriesInstanceUID = attrs.pop("series_uid", SERIES)
    ds.FrameOfReferenceUID = attrs.pop("frame_of_reference_uid", FRAME_OF_REFERENCE)
    ds.Modality = attrs.pop("modality", "CT")
    ds.PatientName = attrs.pop("patient_name", "Anonymous")
    ds.PatientID = attrs.pop("patient_id", "ANON")
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def _save(ds: Dataset, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _pixel_attrs(ds: Dataset, pixels: np.ndarray, *, bits_stored: int | None = None) -> None:
    signed = pixels.dtype.kind == "i"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0


def write_slice(
    path: str | Path,
    pixels: np.ndarray,
    position: Sequence[float],
    *,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.7, 0.9),
    sop_uid: str | None = None,
    sop_class: str = CT_IMAGE,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    instance_number: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attrs,
) -> Path:
    """Write one single-frame grayscale image; ``pixels`` is ``(Rows, Columns)`` int16/uint16."""
    pixels = np.asarray(pixels)
    sop_uid = sop_uid or generate_uid()
    ds = _base(sop_class, sop_uid, transfer_syntax, **attrs)
    ds.ImageType = list(image_type)
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    ds.PhotometricInterpretation = photometric
    _pixel_attrs(ds, pixels, bits_stored=bits_stored)
    ds.PixelData = pixels.tobytes()
    return _save(ds, path)


def write_encapsulated(path: str | Path, transfer_syntax: str, position=(0.0, 0.0, 0.0)) -> Path:
    """A 4x4 image whose pixel data claims ``transfer_syntax`` (content is not a real codestream)."""
    ds = _base(CT_IMAGE, generate_uid(), transfer_syntax)
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(AXIAL)
    ds.PixelSpacing = [1.0, 1.0]
    ds.PhotometricInterpretation = "MONOCHROME2"
    _pixel_attrs(ds, np.zeros((4, 4), np.uint16))
    ds.PixelData = encapsulate([b"\x00" * 32])
    ds["PixelData"].VR = "OB"
    return _save(ds, path)


def write_rgb_secondary_capture(path: str | Path, position=None, shape=(4, 5), **attrs) -> Path:
    """An RGB screenshot (secondary capture) in the series; with a position if given."""
    ds = _base(SECONDARY_CAPTURE, generate_uid(), ExplicitVRLittleEndian, **attrs)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(AXIAL)
        ds.PixelSpacing = [0.7, 0.9]
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((*shape, 3), 200, np.uint8).tobytes()
    return _save(ds, path)


def write_non_image(path: str | Path, sop_class: str = RTSTRUCT, modality: str = "RTSTRUCT", **attrs) -> Path:
    """A header-only object (RTSTRUCT-like), in its own series unless ``series_uid`` is given."""
    attrs.setdefault("series_uid", generate_uid())
    ds = _base(sop_class, generate_uid(), ExplicitVRLittleEndian, modality=modality, **attrs)
    return _save(ds, path)


def write_enhanced(
    path: str | Path,
    frames: np.ndarray,
    positions: Sequence[Sequence[float]],
    *,
    slopes: Sequence[float] | None = None,
    intercepts: Sequence[float] | None = None,
    dimension_values: Sequence[Sequence[int]] | None = None,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.7, 0.9),
    dimension_keywords: Sequence[str] = ("StackID", "InStackPositionNumber", "TemporalPositionIndex"),
    **attrs,
) -> Path:
    """An Enhanced CT image: ``frames`` ``(F, Rows, Columns)``, geometry in the functional groups
    (PS3.3 C.7.6.16): orientation and pixel measures shared, position and rescale per frame. With
    ``dimension_values`` a DimensionIndexSequence (StackID, InStackPositionNumber, TemporalPositionIndex)
    is written (or one of ``dimension_keywords``) and each frame gets those DimensionIndexValues; a
    single dimension is written as one value, which pydicom reads back as an ``int``, not a list."""
    frames = np.asarray(frames)
    ds = _base(ENHANCED_CT, generate_uid(), ExplicitVRLittleEndian, **attrs)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.NumberOfFrames = len(frames)
    ds.PhotometricInterpretation = "MONOCHROME2"
    _pixel_attrs(ds, frames)
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [float(v) for v in orientation]
    shared.PlaneOrientationSequence = DicomSequence([ori])
    meas = Dataset()
    meas.PixelSpacing = [float(v) for v in pixel_spacing]
    meas.SliceThickness = 1.0
    shared.PixelMeasuresSequence = DicomSequence([meas])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    if dimension_values is not None:
        dims = []
        for keyword in dimension_keywords:
            item = Dataset()
            item.DimensionIndexPointer = keyword
            item.FunctionalGroupPointer = "FrameContentSequence"
            dims.append(item)
        ds.DimensionIndexSequence = DicomSequence(dims)
    per_frame = []
    for f, pos in enumerate(positions):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [float(v) for v in pos]
        item.PlanePositionSequence = DicomSequence([plane])
        pvt = Dataset()
        pvt.RescaleSlope = slopes[f] if slopes is not None else 1.0
        pvt.RescaleIntercept = intercepts[f] if intercepts is not None else 0.0
        pvt.RescaleType = "HU"
        item.PixelValueTransformationSequence = DicomSequence([pvt])
        if dimension_values is not None:
            fc = Dataset()
            values = [int(v) for v in dimension_values[f]]
            fc.DimensionIndexValues = values[0] if len(values) == 1 else values
            item.FrameContentSequence = DicomSequence([fc])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = frames.tobytes()
    return _save(ds, path)


def ramp_slices(n: int, rows: int = 3, cols: int = 4, dtype=np.int16) -> np.ndarray:
    """``(n, rows, cols)`` distinct values: slice k, row j, column i holds ``100 k + 10 j + i``."""
    k, j, i = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * k + 10 * j + i).astype(dtype)


def write_series(
    folder: str | Path,
    z_positions: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    pixels: np.ndarray | None = None,
    sop_uids: Sequence[str] | None = None,
    **kwargs,
) -> list[Path]:
    """An axial series: slice ``k`` at ``(10, 20, z_positions[k])`` with ``ramp_slices`` pixels (or ``pixels[k]``).

    InstanceNumber is deliberately the reverse of the position order, so ordering by it would be wrong.
    """
    folder = Path(folder)
    pixels = ramp_slices(len(z_positions)) if pixels is None else pixels
    paths = []
    for k, z in enumerate(z_positions):
        name = names[k] if names is not None else f"im{k:03d}.dcm"
        paths.append(
            write_slice(
                folder / name,
                pixels[k],
                (10.0, 20.0, float(z)),
                instance_number=len(z_positions) - k,
                sop_uid=sop_uids[k] if sop_uids is not None else None,
                **kwargs,
            )
        )
    return paths
