"""Find DICOM series in a folder tree by reading headers only.

``index_dicom_tree(root)`` walks ``root`` recursively, reads each file's header (no pixel data) with pydicom
and groups the instances into studies and series. Files without a ``.dcm`` extension are found, non-DICOM
files (README, NIfTI, JSON) are skipped, and a DICOMDIR is noted but not needed: the walk already finds every
file it points to. Patient names and IDs are never read, so they can never reach a log.

The SOP class is taken from ``SOPClassUID`` or, when that element is empty (as in TotalSegmentator's
example series), from the file meta ``MediaStorageSOPClassUID`` (DICOM PS3.10 section 7.1).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

import m2f_med.io.dicom_vr  # noqa: F401  (replaces pydicom's per-element overlong-value warnings; see there)
from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import is_image_file

__all__ = [
    "InstanceInfo",
    "SeriesInfo",
    "StudyInfo",
    "DicomIndex",
    "index_dicom_tree",
    "read_header",
    "looks_like_dicom",
    "sop_class_kind",
    "sop_class_of",
    "sop_instance_of",
    "plane_label",
    "slice_normal",
]

logger = logging.getLogger(__name__)

# Only what discovery and series selection need; patient-identifying tags are deliberately absent.
_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImageType",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelSpacing",
    "SharedFunctionalGroupsSequence",
]

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

# SOP class UID prefixes of objects that are not part of an image stack (DICOM PS3.4 Annex B.5).
_NON_IMAGE_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66": "SEG/registration/raw data",
    "1.2.840.10008.5.1.4.1.1.481": "RT object",
    "1.2.840.10008.5.1.4.1.1.88": "structured report",
    "1.2.840.10008.5.1.4.1.1.11": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9": "waveform",
    "1.2.840.10008.5.1.4.1.1.4.2": "MR spectroscopy",
    MEDIA_STORAGE_DIRECTORY: "DICOMDIR",
}
_NAMED_NON_IMAGE = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
}
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

# A plane is called AXIAL/CORONAL/SAGITTAL when its normal is within this angle of the patient axis;
# 35 degrees keeps gantry-tilted head CT (typically up to 30 degrees) axial.
OBLIQUE_DEGREES = 35.0


def sop_class_kind(uid: str | None) -> str:
    """Classify a SOP Class UID for stacking and selection.

    Args:
        uid: SOP Class UID (``""``/``None`` if unknown).

    Returns:
        ``"image"`` (may be part of an image stack), ``"secondary_capture"`` (PS3.3 A.8), or the name of a
        non-image object: ``"SEG"``, ``"RTSTRUCT"``, ``"RTDOSE"``, ``"structured report"``, ``"DICOMDIR"``, ...
        Unknown UIDs count as ``"image"``; the loader checks for pixel data and geometry anyway.
    """
    uid = str(uid or "")
    if uid in _NAMED_NON_IMAGE:
        return _NAMED_NON_IMAGE[uid]
    if uid == _SECONDARY_CAPTURE_PREFIX or uid.startswith(_SECONDARY_CAPTURE_PREFIX + "."):
        return "secondary_capture"
    for prefix, name in _NON_IMAGE_PREFIXES.items():
        if uid == prefix or uid.startswith(prefix + "."):
            return name
    return "image"


def sop_class_of(ds: Dataset) -> str:
    """SOP Class UID of a dataset, falling back to the file meta ``MediaStorageSOPClassUID`` when empty."""
    uid = str(ds.get("SOPClassUID", "") or "")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""
    return uid


def sop_instance_of(ds: Dataset) -> str:
    """SOP Instance UID of a dataset, falling back to the file meta ``MediaStorageSOPInstanceUID``."""
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "") if meta is not None else ""
    return uid


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of an image plane, ``row_cosine x column_cosine`` (DICOM PS3.3 C.7.6.2.1.1), LPS.

    Args:
        orientation: ImageOrientationPatient, 6 direction cosines (row direction, then column direction).

    Returns:
        ``(3,)`` float64 unit vector in LPS patient coordinates.

    Raises:
        ValueError: if the cosines are not 6 numbers or the two directions are parallel.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    if iop.shape != (6,):
        raise ValueError(f"ImageOrientationPatient needs 6 values, got {len(iop)}")
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return n / norm


def plane_label(orientation: Sequence[float] | None) -> str:
    """``"AXIAL"``, ``"CORONAL"``, ``"SAGITTAL"`` or ``"OBLIQUE"`` for an ImageOrientationPatient.

    The label is the patient axis (LPS z, y, x) closest to the slice normal, if it is within
    ``OBLIQUE_DEGREES`` of it; ``""`` when there is no (valid) orientation.
    """
    if orientation is None:
        return ""
    try:
        n = np.abs(slice_normal(orientation))
    except ValueError:
        return ""
    axis = int(np.argmax(n))
    if n[axis] < np.cos(np.deg2rad(OBLIQUE_DEGREES)):
        return "OBLIQUE"
    return ("SAGITTAL", "CORONAL", "AXIAL")[axis]


@dataclass(frozen=True)
class InstanceInfo:
    """Header facts of one DICOM file (one SOP instance).

    Attributes:
        path: the file.
        sop_instance_uid: SOPInstanceUID.
        sop_class_uid: SOPClassUID (from the file meta if the element is empty).
        modality: Modality, e.g. ``"CT"``.
        image_type: ImageType values, upper case (``("ORIGINAL", "PRIMARY", "AXIAL")``).
        image_orientation: ImageOrientationPatient (6 cosines) or, for enhanced multi-frame, the first
            frame's PlaneOrientationSequence value; ``None`` if absent.
        image_position: ImagePositionPatient (mm, LPS) of a single-frame image, else ``None``.
        rows: Rows (pixels), 0 if absent.
        columns: Columns (pixels), 0 if absent.
        number_of_frames: NumberOfFrames (1 for single-frame images).
        samples_per_pixel: SamplesPerPixel (3 for RGB).
        instance_number: InstanceNumber or ``None`` (informative only, never used for ordering).
        transfer_syntax_uid: TransferSyntaxUID from the file meta, ``""`` if absent.
    """

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    image_type: tuple[str, ...]
    image_orientation: tuple[float, ...] | None
    image_position: tuple[float, ...] | None
    rows: int
    columns: int
    number_of_frames: int
    samples_per_pixel: int
    instance_number: int | None
    transfer_syntax_uid: str

    @property
    def kind(self) -> str:
        """``sop_class_kind`` of this instance's SOP class."""
        return sop_class_kind(self.sop_class_uid)

    @property
    def is_localizer(self) -> bool:
        """True if ImageType says LOCALIZER (a scout/topogram)."""
        return "LOCALIZER" in self.image_type


@dataclass
class SeriesInfo:
    """One DICOM series found by ``index_dicom_tree``.

    Attributes:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        modality: Modality of the series (most common over its instances).
        description: SeriesDescription (``""`` if absent).
        series_number: SeriesNumber or ``None``.
        frame_of_reference_uid: FrameOfReferenceUID (``""`` if absent).
        instances: the files of the series, in file-name order (NOT slice order).
        uid_missing: the files have no SeriesInstanceUID (anonymised away); ``series_uid`` is then a stand-in
            ``2.25.<n>`` UID derived from the folder, FrameOfReferenceUID, Modality, SeriesNumber and
            SeriesDescription, stable between runs, so it can still be passed to ``select_series``.

    Derived properties give the most common ImageOrientationPatient, its plane label, image type, size,
    SOP classes and counts; see each property.
    """

    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    frame_of_reference_uid: str = ""
    instances: list[InstanceInfo] = field(default_factory=list)
    uid_missing: bool = False

    @property
    def paths(self) -> list[Path]:
        """The series' files (file-name order)."""
        return [i.path for i in self.instances]

    @property
    def n_instances(self) -> int:
        """Number of files (SOP instances) in the series."""
        return len(self.instances)

    @property
    def n_images(self) -> int:
        """Number of 2D images: the sum of NumberOfFrames over the image instances (localizers excluded)."""
        return sum(i.number_of_frames for i in self.instances if i.kind == "image" and not i.is_localizer)

    @property
    def multiframe(self) -> bool:
        """True if any instance holds more than one frame (enhanced or legacy multi-frame)."""
        return any(i.number_of_frames > 1 for i in self.instances)

    @property
    def sop_class_uids(self) -> tuple[str, ...]:
        """The distinct SOP Class UIDs of the series, sorted."""
        return tuple(sorted({i.sop_class_uid for i in self.instances}))

    @property
    def kinds(self) -> tuple[str, ...]:
        """The distinct ``sop_class_kind`` values of the series, sorted (e.g. ``("image",)``)."""
        return tuple(sorted({i.kind for i in self.instances}))

    @property
    def image_type(self) -> tuple[str, ...]:
        """The most common ImageType of the series (``()`` if none is given)."""
        return _most_common([i.image_type for i in self.instances], ())

    @property
    def image_orientation(self) -> tuple[float, ...] | None:
        """The most common ImageOrientationPatient (rounded to 1e-4), or ``None``."""
        iops = [tuple(round(v, 4) for v in i.image_orientation) for i in self.instances if i.image_orientation]
        return _most_common(iops, None)

    @property
    def orientation(self) -> str:
        """Plane label of the most common orientation: ``"AXIAL"``, ``"CORONAL"``, ``"SAGITTAL"``,
        ``"OBLIQUE"``, or ``""`` without geometry."""
        return plane_label(self.image_orientation)

    @property
    def n_orientations(self) -> int:
        """Number of distinct orientations among the instances (more than 1: localizers mixed in)."""
        return len({tuple(round(v, 3) for v in i.image_orientation) for i in self.instances if i.image_orientation})

    @property
    def rows(self) -> int:
        """Most common Rows (pixels)."""
        return _most_common([i.rows for i in self.instances], 0)

    @property
    def columns(self) -> int:
        """Most common Columns (pixels)."""
        return _most_common([i.columns for i in self.instances], 0)

    @property
    def is_localizer(self) -> bool:
        """True if every instance is a LOCALIZER."""
        return bool(self.instances) and all(i.is_localizer for i in self.instances)

    @property
    def is_derived(self) -> bool:
        """True if the series' ImageType starts with DERIVED (a reformat, projection or processed image)."""
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    @property
    def is_color(self) -> bool:
        """True if every image instance has more than one sample per pixel (RGB screenshots)."""
        images = [i for i in self.instances if i.rows]
        return bool(images) and all(i.samples_per_pixel != 1 for i in images)

    def describe(self) -> str:
        """One line for listings: UID, modality, plane, image count, size and description (no patient data)."""
        return (
            f"{self.series_uid}  {self.modality or '?'}  {self.orientation or '-'}  "
            f"{self.n_images} images ({self.n_instances} files)  {self.columns}x{self.rows}  "
            f"{'/'.join(self.kinds)}  {self.description!r}"
        )


@dataclass
class StudyInfo:
    """A study and its series (keyed by SeriesInstanceUID, discovery order)."""

    study_uid: str
    series: dict[str, SeriesInfo] = field(default_factory=dict)


@dataclass
class DicomIndex:
    """Result of ``index_dicom_tree``: studies -> series -> instances.

    Attributes:
        root: the folder (or file) that was indexed.
        studies: ``{StudyInstanceUID: StudyInfo}``.
        skipped: ``(path, reason)`` for every file that is not a readable DICOM instance.
        dicomdirs: DICOMDIR files found (their content is not needed; the walk sees every file).
    """

    root: Path
    studies: dict[str, StudyInfo] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    dicomdirs: list[Path] = field(default_factory=list)

    @property
    def series(self) -> list[SeriesInfo]:
        """All series of all studies, in discovery order."""
        return [s for st in self.studies.values() for s in st.series.values()]

    def __iter__(self) -> Iterator[SeriesInfo]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)

    def get(self, series_uid: str) -> SeriesInfo | None:
        """The series with this SeriesInstanceUID, or ``None``."""
        for st in self.studies.values():
            if series_uid in st.series:
                return st.series[series_uid]
        return None

    def series_of(self, path: str | os.PathLike) -> SeriesInfo | None:
        """The series that holds this file (works for series without a SeriesInstanceUID), or ``None``."""
        target = Path(path).resolve()
        for s in self.series:
            if any(p.resolve() == target for p in s.paths):
                return s
        return None

    def describe(self) -> str:
        """Multi-line listing of studies and series (UIDs, modality, counts; no patient data)."""
        lines = []
        for st in self.studies.values():
            lines.append(f"study {st.study_uid}")
            lines.extend(f"  {s.describe()}" for s in st.series.values())
        if self.skipped:
            lines.append(f"{len(self.skipped)} non-DICOM or unreadable files skipped")
        return "\n".join(lines)


def _most_common(values, default):
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else default


def looks_like_dicom(path: Path) -> bool:
    """Cheap test before parsing: the ``DICM`` magic at byte 128 (PS3.10 7.1), or, for files written without
    a preamble, a first element in group 0002 or 0008 (what dcmtk and GDCM accept too)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02")


def read_header(path: str | os.PathLike, tags: Sequence[str] | None = None) -> Dataset:
    """Read a DICOM header without pixel data.

    Args:
        path: a DICOM file.
        tags: keywords to read (``None``: all but pixel data).

    Returns:
        The pydicom ``Dataset`` (with ``file_meta`` when the file has one).

    Raises:
        VolumeError: the file is not DICOM or cannot be parsed.
    """
    path = Path(path)
    if not looks_like_dicom(path):
        raise VolumeError(path, "not a DICOM file (no DICM header)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags, force=True)
    except Exception as e:  # corrupt files make pydicom raise many types; all mean "unreadable"
        raise VolumeError(path, f"unreadable DICOM header: {type(e).__name__}: {e}") from e


def _first_frame_orientation(ds: Dataset, path: Path) -> tuple[float, ...] | None:
    """Enhanced multi-frame: ImageOrientationPatient from the shared or (re-read) first per-frame group."""
    for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(seq_name)
        if seq_name == "PerFrameFunctionalGroupsSequence" and seq is None:
            # Philips puts the orientation per frame; read that large sequence only when needed.
            seq = read_header(path, ["PerFrameFunctionalGroupsSequence"]).get(seq_name)
        if seq:
            item = seq[0]
            if "PlaneOrientationSequence" in item and item.PlaneOrientationSequence:
                iop = item.PlaneOrientationSequence[0].get("ImageOrientationPatient")
                if iop is not None and len(iop) == 6:
                    return tuple(float(v) for v in iop)
    return None


def _instance_from_header(ds: Dataset, path: Path) -> InstanceInfo:
    def floats(name):
        v = ds.get(name)
        try:
            return tuple(float(x) for x in v) if v is not None and len(v) in (3, 6) else None
        except (TypeError, ValueError):
            return None

    n_frames = ds.get("NumberOfFrames")
    try:
        n_frames = max(1, int(n_frames)) if n_frames not in (None, "") else 1
    except (TypeError, ValueError):
        n_frames = 1
    iop = floats("ImageOrientationPatient")
    if iop is None and ("SharedFunctionalGroupsSequence" in ds or n_frames > 1):
        iop = _first_frame_orientation(ds, path)
    inst_no = ds.get("InstanceNumber")
    meta = getattr(ds, "file_meta", None)
    return InstanceInfo(
        path=path,
        sop_instance_uid=sop_instance_of(ds),
        sop_class_uid=sop_class_of(ds),
        modality=str(ds.get("Modality", "") or "").upper(),
        image_type=tuple(str(v).strip().upper() for v in (ds.get("ImageType") or ())),
        image_orientation=iop,
        image_position=floats("ImagePositionPatient"),
        rows=int(ds.get("Rows") or 0),
        columns=int(ds.get("Columns") or 0),
        number_of_frames=n_frames,
        samples_per_pixel=int(ds.get("SamplesPerPixel") or 1),
        instance_number=int(inst_no) if inst_no not in (None, "") else None,
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else "",
    )


def _stand_in_series_uid(ds: Dataset, path: Path) -> str:
    """A stable ``2.25.<n>`` UID (PS3.5 B.2 form) for files that lost their SeriesInstanceUID."""
    key = "|".join(
        str(v)
        for v in (
            path.parent.resolve(),
            ds.get("StudyInstanceUID", ""),
            ds.get("FrameOfReferenceUID", ""),
            ds.get("Modality", ""),
            ds.get("SeriesNumber", ""),
            ds.get("SeriesDescription", ""),
        )
    )
    return "2.25." + str(int(hashlib.sha256(key.encode()).hexdigest()[:30], 16))


def _iter_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # deterministic order on every file system
        for name in sorted(filenames):
            yield Path(dirpath) / name


def index_dicom_tree(root: str | os.PathLike) -> DicomIndex:
    """Index every DICOM instance under ``root`` (recursively) into studies and series.

    Reads headers only (``dcmread(stop_before_pixels=True, specific_tags=...)``), about 1 ms per file here.
    Files of any name are tried; non-DICOM and unreadable files are listed in ``skipped``; a DICOMDIR is
    listed in ``dicomdirs``.

    Args:
        root: a folder (searched recursively) or a single DICOM file.

    Returns:
        ``DicomIndex``; series keep file-name order (slice order is the loader's job).

    Raises:
        VolumeError: ``root`` does not exist, or holds no DICOM image or object at all.
    """
    root = Path(root)
    if not root.exists():
        raise VolumeError(root, "no such file or folder")
    index = DicomIndex(root=root)
    n_files = 0
    for path in _iter_files(root):
        n_files += 1
        try:
            ds = read_header(path, _HEADER_TAGS)
        except VolumeError as e:
            index.skipped.append((path, e.message))
            continue
        sop_class = sop_class_of(ds)
        if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            index.dicomdirs.append(path)
            continue
        if not sop_class:
            index.skipped.append((path, "DICOM file without a SOP class (neither SOPClassUID nor file meta)"))
            continue
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        synthesized = not series_uid
        if synthesized:
            series_uid = _stand_in_series_uid(ds, path)
        inst = _instance_from_header(ds, path)
        study = index.studies.setdefault(study_uid, StudyInfo(study_uid))
        series = study.series.get(series_uid)
        if series is None:
            number = ds.get("SeriesNumber")
            series = study.series[series_uid] = SeriesInfo(
                study_uid=study_uid,
                series_uid=series_uid,
                description=str(ds.get("SeriesDescription", "") or ""),
                series_number=int(number) if number not in (None, "") else None,
                frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
                uid_missing=synthesized,
            )
        series.instances.append(inst)
    for s in index.series:
        s.modality = _most_common([i.modality for i in s.instances if i.modality], "")
    logger.info(
        "indexed %d files under %s: %d studies, %d series, %d skipped",
        n_files, root, len(index.studies), len(index), len(index.skipped),
    )
    if not index.studies:
        images = [p for p, _ in index.skipped if is_image_file(p)]
        hint = f"; it holds image files such as {images[0].name}: pass those files themselves" if images else ""
        raise VolumeError(root, f"no DICOM series found ({n_files} files looked at, none is a DICOM instance){hint}")
    return index
