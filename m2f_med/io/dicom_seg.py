"""DICOM Segmentation (SEG) objects: label map → SEG and SEG → label map, through highdicom.

Writing (``write_dicom_seg``) follows dcmqi's ``itkimage2segimage``: one BINARY SEG instance whose frames are
pixel-for-pixel aligned with the source series' instances and reference them (DICOM PS3.3 C.8.20,
Segmentation IOD). Each source instance's plane (ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) is mapped into the label map's voxel grid through its affine, so a label map that was flipped
or transposed (e.g. reoriented to RAS) is still written correctly, as long as its grid coincides with the
series grid (same voxel centres up to 0.01 voxel). Rules:

* one segment per label value present, numbered 1..n in increasing label value (BINARY SEGs must number
  their segments 1..n, PS3.3 C.8.20.2, so segment numbers cannot equal arbitrary label values). The label
  value is kept in the standard, type 3 SegmentDescription (0062,0006) as ``"label value <v>"``
  (:data:`LABEL_VALUE_TEXT`), no private tags; :func:`read_dicom_seg` reads it back, so ids match
  ``labels.json`` even when some labels are empty. The segment label is the name (else ``"label <v>"``), the
  codes come from ``m2f_med.io.codes`` (SNOMED CT), RecommendedDisplayCIELabValue from the shared colour
  table (``m2f_med.io.colors``) unless a :class:`SegmentInfo` gives another colour;
* per segment a :class:`SegmentInfo` (label value, name, colour, algorithm type, algorithm name, tracking
  id/UID) may be passed: AUTOMATIC / SEMIAUTOMATIC segments name their algorithm (family "Artificial
  Intelligence", PS3.16 CID 7162), MANUAL ones carry none;
* an all-zero mask raises ``VolumeError("mask is empty; nothing to encode")`` - a SEG without segments
  is not valid DICOM, and silently writing nothing would hide a failed prediction;
* labelled voxels that no source instance covers (slices created by resampling, whose
  ``SOPInstanceUIDs`` entry is ``None``, or a grid that does not match the series) raise a ``VolumeError``;
  empty slices without a source instance are simply not encoded;
* the SEG is written in UTF-8 (``SpecificCharacterSet = "ISO_IR 192"``) whatever the source declares, so an
  empty or unknown source character set (seen in real CT) cannot break writing; missing Type 2 patient/study
  attributes of the source are written empty; SeriesDescription says "not for clinical use".

Reading (``read_dicom_seg``) maps every segment to its label value (the ``"label value <v>"`` text when every
segment has a distinct one, else the segment number, as for SEGs from other tools), and records one
:class:`SegmentInfo` per segment (with its RGB from RecommendedDisplayCIELabValue) in
``meta["segments"]``. It takes highdicom's regular-grid volume of the SEG and, given a ``reference``
volume, resamples it onto that grid by world position (nearest neighbour, ``scipy.ndimage.affine_transform``);
without a reference the SEG's own grid is returned. Overlapping segments: the highest segment number wins,
and the number of overlapping voxels is reported in ``problems``. FRACTIONAL segments are thresholded at
0.5 (probability or occupancy ≥ 0.5 belongs to the segment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from m2f_med.io.atomic import atomic_write
from m2f_med.io.codes import segment_codes
from m2f_med.io.colors import label_rgb
from m2f_med.io.dicom_index import sop_class_of, sop_instance_of
from m2f_med.io.errors import VolumeError
from m2f_med.io.volume import (
    FOR_UID,
    LPS_TO_RAS,
    MODALITY,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_UIDS,
    SOURCE_FORMAT,
    SOURCE_PATHS,
    STUDY_UID,
    make_volume,
)
from m2f_med.io.writers import label_dtype

__all__ = [
    "SEG_SERIES_DESCRIPTION",
    "SEGMENTS",
    "LABEL_VALUE_TEXT",
    "ALGORITHM_TYPES",
    "SegmentInfo",
    "segment_infos",
    "write_dicom_seg",
    "read_dicom_seg",
]

log = logging.getLogger(__name__)

SEG_SERIES_DESCRIPTION = "m2f-med segmentation - not for clinical use"
_GRID_TOL_VOXEL = 1e-2
_FRACTION_THRESHOLD = 0.5
SEGMENTS = "segments"
"""``meta`` key of a read SEG: list of :class:`SegmentInfo` dicts (``dataclasses.asdict``), one per segment."""
LABEL_VALUE_TEXT = "label value {value}"
"""SegmentDescription (0062,0006) text that records the label value a segment was written from."""
_LABEL_VALUE_RE = re.compile(r"\blabel value (\d+)\b")
ALGORITHM_TYPES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
"""SegmentAlgorithmType values (DICOM PS3.3 C.8.20.2)."""
_TYPE2_ATTRIBUTES = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName",
)


@dataclass(frozen=True)
class SegmentInfo:
    """What one segment of a DICOM-SEG says about a label value (PS3.3 C.8.20.2 Segment Description).

    The writer takes one per label value (:func:`segment_infos` builds the usual ones); the reader returns
    one per segment. Extension point: fields added here (e.g. lesion descriptions) reach both sides.

    Attributes:
        label_value: the value in the label map (kept as SegmentDescription ``"label value <v>"``).
        name: SegmentLabel (64 characters at most) and the key for the SNOMED CT codes.
        rgb: display colour ``(r, g, b)`` 0-255, written as RecommendedDisplayCIELabValue; ``None`` takes
            the shared colour table (``m2f_med.io.colors.label_rgb``).
        algorithm_type: ``"AUTOMATIC"`` (model output as is), ``"SEMIAUTOMATIC"`` (model output edited by
            hand) or ``"MANUAL"`` (drawn by hand).
        algorithm_name: the algorithm (model) name, required for AUTOMATIC / SEMIAUTOMATIC, ignored for MANUAL.
        algorithm_version: its version (default: the m2f-med version).
        tracking_id: TrackingID (e.g. a lesion's id across time points), or ``None``.
        tracking_uid: TrackingUID, or ``None`` (one is made up when ``tracking_id`` is given).
        segment_number: the SEG's segment number (set when read; ignored when writing).
    """

    label_value: int
    name: str
    rgb: tuple[int, int, int] | None = None
    algorithm_type: str = "MANUAL"
    algorithm_name: str | None = None
    algorithm_version: str | None = None
    tracking_id: str | None = None
    tracking_uid: str | None = None
    segment_number: int | None = None


def segment_infos(
    labels: Mapping[int, str] | None,
    values: Sequence[int],
    *,
    algorithm: str | None = None,
    edited: Sequence[int] | None = None,
    model_values: Sequence[int] | None = None,
) -> dict[int, SegmentInfo]:
    """The usual segment descriptions for ``values``: names from ``labels``, colours from the shared table.

    Args:
        labels: ``{label value: name}`` (int or digit-string keys); unnamed values become ``"label <v>"``.
        values: the label values to describe (> 0).
        algorithm: the model that produced the labels; ``None`` makes every segment MANUAL.
        edited: label values of a model result that were changed by hand: SEMIAUTOMATIC.
        model_values: label values the model produced (default: all of ``values``); any other value was
            added by hand: MANUAL.

    Returns:
        ``{label value: SegmentInfo}``.
    """
    names = {int(k): str(v) for k, v in (labels or {}).items() if str(k).strip().lstrip("-").isdigit()}
    edited_set = {int(v) for v in edited or ()}
    model_set = {int(v) for v in (values if model_values is None else model_values)}
    out = {}
    for value in (int(v) for v in values):
        name = names.get(value, f"label {value}")
        if not algorithm or value not in model_set:
            kind, alg = "MANUAL", None
        else:
            kind, alg = ("SEMIAUTOMATIC" if value in edited_set else "AUTOMATIC"), algorithm
        out[value] = SegmentInfo(value, name, label_rgb(value, name), kind, alg)
    return out


def write_dicom_seg(
    mask: torch.Tensor,
    reference: torch.Tensor,
    path: str | os.PathLike,
    *,
    labels: Mapping[int, str] | None = None,
    algorithm: str | None = "m2f-med",
    segments: Mapping[int, SegmentInfo] | Sequence[SegmentInfo] | None = None,
    series_number: int = 300,
    series_description: str = SEG_SERIES_DESCRIPTION,
    manufacturer: str = "m2f-med",
    model_name: str = "m2f-med",
) -> Path:
    """Write a label map as a DICOM-SEG that references the instances of its source DICOM series.

    Args:
        mask: ``MetaTensor`` ``(1, X, Y, Z)`` of integer labels (0 = background) with an RAS affine (mm), on
            the grid of the source series (any axis order or flips; e.g. a NIfTI prediction).
        reference: the source series as loaded by ``load_volume`` (DICOM): its ``meta["source_paths"]`` and
            ``meta["SOPInstanceUIDs"]`` say which files to reference; they are read again with pydicom
            (headers only, never modified).
        path: output file (``.dcm`` by convention), written atomically.
        labels: ``{label value: name}`` (int or digit-string keys); names give SegmentLabel and the SNOMED CT codes
            (``m2f_med.io.codes.segment_codes``). Unnamed values become ``"label <value>"`` with the generic
            "Tissue" code.
        algorithm: algorithm name for SegmentAlgorithmType AUTOMATIC (family "Artificial Intelligence");
            ``None`` writes MANUAL segments (e.g. converting a hand-drawn label map).
        segments: per label value a :class:`SegmentInfo` (name, colour, algorithm type and name, tracking
            id) that overrides ``labels`` / ``algorithm`` for that value (:func:`segment_infos` builds them);
            values present in the mask but not here get the defaults, entries for absent values are
            ignored.
        series_number: SeriesNumber of the new SEG series.
        series_description: SeriesDescription; keep "not for clinical use" in it.
        manufacturer: Manufacturer of the equipment (the software) creating the SEG.
        model_name: ManufacturerModelName.

    Returns:
        The written path. Segment ``k`` (1-based) holds the ``k``-th smallest label value present; its
        SegmentDescription says ``"label value <v>"`` so :func:`read_dicom_seg` restores the value.

    Raises:
        VolumeError: an empty mask ("mask is empty; nothing to encode"); labels that are negative,
            non-integer or > 65535; a reference without DICOM source files; a source file that cannot be
            read; labelled voxels that no source instance covers; highdicom refusing the data.

    See Also:
        DICOM PS3.3 A.51 (Segmentation IOD), C.8.20.2 (Segment Description); highdicom
        ``highdicom.seg.Segmentation``; dcmqi ``itkimage2segimage``.
    """
    import highdicom as hd

    from m2f_med import __version__

    out = Path(path)
    data, affine = _label_array(mask, out)
    if data.size == 0 or not data.any():
        raise VolumeError(out, "mask is empty; nothing to encode (a DICOM-SEG needs at least one segment)")
    label_dtype(np.array([data.min(), data.max()]), out)  # refuses negative / too large labels
    counts = np.zeros(int(data.max()) + 1, dtype=np.int64)
    for k in range(data.shape[2]):  # slice by slice: np.unique would sort the whole volume
        counts += np.bincount(data[:, :, k].ravel(), minlength=counts.size)
    present = [int(v) for v in np.flatnonzero(counts) if v != 0]
    sources = _source_datasets(reference, out)

    # segment k <-> k-th smallest label value present
    lut = np.zeros(max(present) + 1, dtype=np.uint16)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    frames, covered = _frames_for_sources(lut[data], affine, sources, out)
    uncovered = int(np.count_nonzero((data != 0) & ~covered))
    if uncovered:
        raise VolumeError(
            out,
            f"{uncovered} labelled voxels lie on no source DICOM slice (slices created by resampling, or a "
            "mask grid that differs from the series grid); resample the mask onto the original series grid",
        )

    infos = segment_infos(labels, present, algorithm=algorithm)
    given = segments.values() if isinstance(segments, Mapping) else (segments or ())
    for info in given:
        if int(info.label_value) in infos:
            infos[int(info.label_value)] = info
    descriptions = [_segment_description(number, infos[value], __version__, out)
                    for number, value in enumerate(present, start=1)]

    try:
        with _quiet_highdicom():
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=frames,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer=manufacturer,
                manufacturer_model_name=model_name,
                software_versions=__version__,
                device_serial_number="0",
                series_description=series_description[:64],
                content_label="M2F_MED",
                content_description="Segmentation written by m2f-med",
                specific_character_set="ISO_IR 192",
                omit_empty_frames=True,
            )
    except (ValueError, TypeError, AttributeError) as err:
        raise VolumeError(out, f"highdicom cannot build the SEG: {err}") from None
    with atomic_write(out) as tmp:
        seg.save_as(str(tmp), enforce_file_format=True)
    log.info("wrote DICOM-SEG with %d segments over %d source instances", len(present), len(sources))
    return out


def _segment_description(number: int, info: SegmentInfo, version: str, out: Path):
    """highdicom ``SegmentDescription`` for segment ``number`` from a :class:`SegmentInfo`."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    kind = str(info.algorithm_type).upper()
    if kind not in ALGORITHM_TYPES:
        raise VolumeError(out, f"segment {info.name!r}: algorithm type {info.algorithm_type!r} is not one of {ALGORITHM_TYPES}")
    ident = None
    if kind != "MANUAL":
        if not info.algorithm_name:
            raise VolumeError(out, f"segment {info.name!r}: an {kind} segment must name its algorithm")
        ident = hd.AlgorithmIdentificationSequence(
            name=str(info.algorithm_name)[:64],
            family=dcm_codes.cid7162.ArtificialIntelligence,
            version=str(info.algorithm_version or version)[:64],
        )
    name = str(info.name)[:64]
    sc = segment_codes(name)
    rgb = info.rgb if info.rgb is not None else label_rgb(info.label_value, info.name)
    tracking_uid = info.tracking_uid or (hd.UID() if info.tracking_id else None)
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=sc.category,
        segmented_property_type=sc.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues[kind],
        algorithm_identification=ident,
        tracking_id=str(info.tracking_id)[:64] if info.tracking_id else None,
        tracking_uid=tracking_uid,
        display_color=hd.color.CIELabColor.from_rgb(*(int(c) for c in rgb[:3])),
    )
    desc.SegmentDescription = LABEL_VALUE_TEXT.format(value=int(info.label_value))
    if sc.modifier is not None:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(sc.modifier.value, sc.modifier.scheme_designator, sc.modifier.meaning)
        ]
    return desc


def _read_segment_info(item, number: int) -> SegmentInfo:
    """A :class:`SegmentInfo` from one SegmentSequence item (label value: the recorded one, else the number)."""
    import highdicom as hd

    match = _LABEL_VALUE_RE.search(str(item.get("SegmentDescription", "") or ""))
    rgb = None
    lab = item.get("RecommendedDisplayCIELabValue")
    if lab is not None and len(lab) == 3:
        with contextlib.suppress(ValueError, TypeError):
            rgb = tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True))
    ident = (item.get("SegmentationAlgorithmIdentificationSequence") or [None])[0]
    return SegmentInfo(
        label_value=int(match.group(1)) if match else number,
        name=str(item.get("SegmentLabel", "") or f"segment {number}"),
        rgb=rgb,
        algorithm_type=str(item.get("SegmentAlgorithmType", "") or ""),
        algorithm_name=str(ident.get("AlgorithmName", "")) if ident is not None else None,
        algorithm_version=str(ident.get("AlgorithmVersion", "")) if ident is not None else None,
        tracking_id=str(item.get("TrackingID")) if item.get("TrackingID") else None,
        tracking_uid=str(item.get("TrackingUID")) if item.get("TrackingUID") else None,
        segment_number=number,
    )


def read_dicom_seg(
    path: str | os.PathLike, reference: torch.Tensor | None = None
) -> tuple[MetaTensor, dict[int, str]]:
    """Read a DICOM-SEG as a label map, on a reference grid or on the SEG's own grid.

    Args:
        path: the SEG file (BINARY, FRACTIONAL or LABELMAP).
        reference: optional volume ``(C, X, Y, Z)`` with an RAS affine (DICOM or NIfTI). When given, the
            label map is resampled onto its grid by world position (nearest neighbour); when both carry a
            FrameOfReferenceUID they must agree.

    Returns:
        ``(label, names)``: ``label`` is a ``(1, X, Y, Z)`` uint8/uint16 ``MetaTensor`` (RAS affine) whose
        values are the label values the segments were written from (``"label value <v>"`` in each
        SegmentDescription, as m2f-med writes it), or the segment numbers when the SEG does not record
        distinct values (SEGs from other tools); ``names`` maps each value to its SegmentLabel.
        ``meta["segments"]`` lists one :class:`SegmentInfo` dict per segment (value, name, RGB from
        RecommendedDisplayCIELabValue, algorithm type and name, tracking id).
        Overlaps (highest segment number wins), fractional thresholding (≥ 0.5) and labelled voxels that
        fall outside the reference grid (left out) are noted in ``meta["problems"]``.

    Raises:
        VolumeError: the file is not a readable SEG, its frames do not form a regular 3-D grid, or its
            frame of reference differs from the reference's.

    See Also:
        DICOM PS3.3 C.8.20 (Segmentation); ``highdicom.seg.Segmentation.get_volume``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if not p.is_file():
        raise VolumeError(p, "file not found")
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, ValueError) as err:
        raise VolumeError(p, f"not a readable DICOM file ({err})") from None
    if ds.get("Modality") != "SEG":
        raise VolumeError(p, f"not a DICOM Segmentation (Modality {ds.get('Modality', 'missing')!r})")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except (ValueError, AttributeError, KeyError) as err:
        raise VolumeError(p, f"highdicom cannot parse this SEG ({err})") from None
    numbers = [int(n) for n in seg.segment_numbers if int(n) != 0]
    if not numbers:
        raise VolumeError(p, "the SEG describes no segments")
    infos = [_read_segment_info(seg.get_segment_description(n), n) for n in numbers]
    values = [i.label_value for i in infos]
    if len(set(values)) != len(values) or min(values) < 1 or max(values) > 65535:
        infos = [replace(i, label_value=n) for i, n in zip(infos, numbers)]  # not ours: segment numbers
    value_of = {i.segment_number: i.label_value for i in infos}
    names = {i.label_value: i.name for i in infos}
    seg_for = str(ds.get("FrameOfReferenceUID", "")) or None
    if reference is not None:
        ref_for = getattr(reference, "meta", {}).get(FOR_UID)
        if seg_for and ref_for and str(ref_for) != seg_for:
            raise VolumeError(p, f"SEG frame of reference {seg_for} differs from the reference volume's {ref_for}")
    problems: list[str] = []
    dtype = np.uint8 if max(value_of.values()) <= 255 else np.uint16
    label = seen = multi = grid = None
    fractional = False
    for number in numbers:  # one segment at a time: 100+ segments of a CT would not fit stacked
        try:
            vol = seg.get_volume(segment_numbers=[number], combine_segments=False, rescale_fractional=True)
        except (ValueError, RuntimeError) as err:
            raise VolumeError(p, f"the SEG frames do not form a regular 3-D grid ({err})") from None
        part = np.asarray(vol.array)[..., 0]  # (slices, rows, columns)
        if np.issubdtype(part.dtype, np.floating):
            fractional = True
            part = part >= _FRACTION_THRESHOLD
        part = part.astype(bool, copy=False)
        if label is None:
            grid = np.asarray(vol.affine, dtype=np.float64)
            label = np.zeros(part.shape, dtype=dtype)
            seen, multi = np.zeros(part.shape, bool), np.zeros(part.shape, bool)
        elif part.shape != label.shape or not np.allclose(vol.affine, grid, atol=1e-4):
            raise VolumeError(p, f"segment {number} lies on a different grid from segment {numbers[0]}")
        multi |= seen & part
        seen |= part
        label[part] = value_of[number]  # ascending numbers: the highest segment wins an overlap
    if fractional:
        problems.append(f"fractional segmentation thresholded at {_FRACTION_THRESHOLD}")
    overlap = int(np.count_nonzero(multi))
    if overlap:
        problems.append(f"{overlap} voxels belong to several segments; the highest segment number was kept")
    # highdicom: (slice, row, column) -> LPS; ours: (X = column, Y = row, Z = slice) -> RAS
    label = label.transpose(2, 1, 0)
    affine = LPS_TO_RAS @ grid[:, [2, 1, 0, 3]]

    meta = {
        MODALITY: "SEG",
        SOURCE_FORMAT: "dicom-seg",
        SOURCE_PATHS: [str(p)],
        SERIES_UID: str(ds.get("SeriesInstanceUID", "")),
        STUDY_UID: str(ds.get("StudyInstanceUID", "")),
        FOR_UID: seg_for or "",
        SOP_CLASS_UID: str(ds.get("SOPClassUID", "")),
        SEGMENTS: [asdict(i) for i in infos],
        "problems": problems,
    }
    if reference is not None:
        ref_affine = np.asarray(torch.as_tensor(reference.affine, dtype=torch.float64).cpu().numpy())
        ref_shape = tuple(int(s) for s in reference.shape[-3:])
        if outside := _voxels_outside(label, affine, ref_affine, ref_shape):
            problems.append(
                f"{outside} labelled voxels of the SEG lie outside the reference grid and were left out (a SEG "
                "of more slices than the reference holds, e.g. one side of a series split at the gap limit)"
            )
        label = _resample_nearest(label, affine, ref_affine, ref_shape)
        affine = ref_affine
    return make_volume(label, affine, **meta), names


@contextlib.contextmanager
def _quiet_highdicom():
    """Silence highdicom's person-name warnings while copying patient attributes: they quote the name."""
    hd_log = logging.getLogger("highdicom")
    level = hd_log.level
    hd_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        hd_log.setLevel(level)


def _voxels_outside(src: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape) -> int:
    """How many labelled voxels of ``src`` (X, Y, Z) have their centre outside the ``dst`` grid (half a voxel
    beyond the first and last voxel centres along each axis), so that nearest-neighbour resampling drops them."""
    idx = np.argwhere(src > 0)
    if not len(idx):
        return 0
    m = np.linalg.inv(dst_affine) @ src_affine  # src voxel -> dst voxel
    at = idx @ m[:3, :3].T + m[:3, 3]
    inside = np.all((at > -0.5) & (at < np.asarray(dst_shape) - 0.5), axis=1)
    return int(np.count_nonzero(~inside))


def _resample_nearest(src: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape) -> np.ndarray:
    """Nearest-neighbour resampling of ``src`` onto a grid given by ``dst_affine``/``dst_shape`` (world mm)."""
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(src_affine) @ dst_affine  # dst voxel -> src voxel
    return affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=dst_shape, order=0, mode="grid-constant", cval=0)


def _label_array(mask: torch.Tensor, out: Path) -> tuple[np.ndarray, np.ndarray]:
    affine = getattr(mask, "affine", None)
    if affine is None or not isinstance(mask, torch.Tensor):
        raise VolumeError(out, "the mask must be a MetaTensor with an affine")
    data = torch.as_tensor(mask).detach().cpu().numpy()
    if data.ndim != 4 or data.shape[0] != 1:
        raise VolumeError(out, f"the mask must be (1, X, Y, Z), got shape {tuple(data.shape)}")
    data = data[0]
    if np.issubdtype(data.dtype, np.floating):
        label_dtype(data, out)  # refuses non-integer values
        data = data.astype(np.int64)
    elif data.dtype == np.bool_:
        data = data.astype(np.uint8)
    return data, np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu().numpy())


def _source_datasets(reference: torch.Tensor, out: Path) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    meta = getattr(reference, "meta", None) or {}
    paths = [str(x) for x in meta.get(SOURCE_PATHS) or []]
    uids = [u for u in meta.get(SOP_UIDS) or [] if u]
    if meta.get(SOURCE_FORMAT, "dicom") != "dicom" or not paths or not uids:
        raise VolumeError(
            out,
            "the reference has no DICOM source instances (source_paths / SOPInstanceUIDs); load the original "
            "series with load_volume(series folder)",
        )
    wanted = set(uids)
    datasets, seen = [], set()
    for src in dict.fromkeys(paths):
        try:
            ds = pydicom.dcmread(src, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as err:
            raise VolumeError(src, f"cannot read source DICOM file ({err})") from None
        # the loader falls back to the file meta when the SOP Instance/Class UID elements are empty (the
        # TotalSegmentator sample CT); match the same way and give highdicom the filled-in values
        uid = sop_instance_of(ds)
        if uid in wanted and uid not in seen:
            seen.add(uid)
            ds.SOPInstanceUID = uid
            ds.SOPClassUID = sop_class_of(ds)
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
                if not str(ds.get(keyword, "") or ""):
                    raise VolumeError(
                        src,
                        f"the source image has no {keyword} (anonymised?); a DICOM-SEG must reference the study "
                        "and series of its source images: write NIfTI instead",
                    )
            datasets.append(_with_type2_attributes(ds))
    if not datasets:
        raise VolumeError(out, "none of the reference's source files holds one of its SOPInstanceUIDs")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise VolumeError(out, "multi-frame (enhanced) source images are not supported for SEG writing")
    return datasets


def _with_type2_attributes(ds):
    """Make the patient/study attributes highdicom copies valid: empty where the source lacks them or holds
    an invalid date/sex, cut to 16 characters where a short string (SH) is too long. Only this in-memory
    header copy changes, never the source file."""
    from pydicom.valuerep import DA, TM

    for keyword in _TYPE2_ATTRIBUTES:
        if keyword not in ds or ds[keyword].value is None:
            setattr(ds, keyword, "")
    if str(ds.PatientSex) not in ("M", "F", "O", ""):
        ds.PatientSex = ""
    for keyword in ("StudyID", "AccessionNumber"):  # SH: 16 characters at most (PS3.5 6.2); seen 17 in TCIA
        value = str(ds[keyword].value or "")
        if len(value) > 16:
            setattr(ds, keyword, value[:16])
    for keyword, kind in (("StudyDate", DA), ("PatientBirthDate", DA), ("StudyTime", TM)):
        value = str(ds[keyword].value or "")
        try:
            kind(value)
        except ValueError:
            setattr(ds, keyword, "")
    return ds


def _frames_for_sources(data: np.ndarray, affine: np.ndarray, sources: list, out: Path):
    """Sample the label map at every pixel centre of every source instance.

    Returns ``(frames, covered)``: ``frames`` is ``(n_sources, Rows, Columns)`` with the values of ``data``, zero
    outside the mask grid; ``covered`` is a bool mask of the label grid's voxels some source pixel hit.
    """
    inv = np.linalg.inv(affine)
    shape = np.asarray(data.shape)
    covered = np.zeros(data.shape, dtype=bool)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    frames = np.zeros((len(sources), rows, cols), dtype=data.dtype)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    for n, ds in enumerate(sources):
        try:
            ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
            iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
            dr, dc = (float(v) for v in ds.PixelSpacing)  # (row spacing, column spacing)
        except (AttributeError, ValueError, TypeError) as err:
            raise VolumeError(out, f"source instance lacks plane geometry ({err})") from None
        # DICOM PS3.3 C.7.6.2.1.1: P(r, c) = IPP + c * dc * row_cosine + r * dr * column_cosine  (LPS)
        origin = inv @ (LPS_TO_RAS @ np.append(ipp, 1.0))
        step_c = inv[:3, :3] @ (LPS_TO_RAS[:3, :3] @ (iop[:3] * dc))
        step_r = inv[:3, :3] @ (LPS_TO_RAS[:3, :3] @ (iop[3:] * dr))
        if not _aligned(origin[:3]) or not _aligned(step_c) or not _aligned(step_r):
            continue  # this source plane does not fall on the mask grid; coverage check reports labels
        o = np.rint(origin[:3]).astype(np.int64)
        sc_, sr_ = np.rint(step_c).astype(np.int64), np.rint(step_r).astype(np.int64)
        idx = [o[a] + sc_[a] * cc + sr_[a] * rr for a in range(3)]
        inside = np.ones((rows, cols), dtype=bool)
        for a in range(3):
            inside &= (idx[a] >= 0) & (idx[a] < shape[a])
        if not inside.any():
            continue
        sel = tuple(i[inside] for i in idx)
        frames[n][inside] = data[sel]
        covered[sel] = True
    return frames, covered


def _aligned(v: np.ndarray) -> bool:
    return bool(np.all(np.abs(v - np.rint(v)) <= _GRID_TOL_VOXEL))
