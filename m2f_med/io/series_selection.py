"""Choose the image series to segment from a ``DicomIndex``, by explicit rules.

In the spirit of MONAI Deploy's ``DICOMSeriesSelectorOperator`` (rules over DICOM attributes), but with
fixed, documented rules instead of a JSON rule file, and a refusal instead of a guess when the rules do not
decide. Taking the wrong series (a scout, a screenshot, the other patient) is the failure users are hurt
by most, so an ambiguity is an error that lists the candidates.

Rules, in order:

1. ``series_uid`` given: that series, if it is an image series (else an error naming what it is).
2. Hard filters (a series failing one is never chosen automatically; each exclusion is recorded with its
   reason): ``modality`` (if given); an image SOP class (no SEG, RTSTRUCT, RTDOSE, RTPLAN, SR, presentation
   state, DICOMDIR, ...); not secondary capture; not colour (RGB); not all LOCALIZER; ``study_uid`` (if
   given).
3. One study only: candidates from several studies (or patients: a multi-patient DICOMDIR) are ambiguous
   unless ``study_uid`` says which.
4. DERIVED series (reformats, MIPs, processed images) are excluded when an ORIGINAL candidate exists
   (unless ``allow_derived``); a folder holding only DERIVED images (e.g. bias-corrected research MR)
   still yields its series.
5. Preference for the ``orientation`` plane (``"AXIAL"`` by default) when at least one candidate has it.
6. Preference for the most 2D images (``SeriesInfo.n_images``: frames, localizers not counted).
7. A tie left after 6 is ambiguous: ``AmbiguousSeriesError`` with the tied candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

from m2f_med.io.dicom_index import DicomIndex, SeriesInfo
from m2f_med.io.errors import VolumeError

__all__ = ["SeriesSelectionError", "AmbiguousSeriesError", "NoSeriesError", "select_series", "series_exclusion"]

# named by the command-line flags a user types; the Python argument in brackets
CHOOSE = "choose one with --series UID (predict: --series-rule uid:UID; series_uid= in Python)"


class SeriesSelectionError(VolumeError):
    """No single series could be chosen.

    Args:
        path: the indexed folder.
        message: what went wrong and what to pass instead.
        candidates: the series still in the running (for the CLI to list).
        excluded: ``(series, reason)`` for every series the hard filters removed.
    """

    def __init__(
        self,
        path,
        message: str,
        candidates: Sequence[SeriesInfo] = (),
        excluded: Sequence[tuple[SeriesInfo, str]] = (),
    ):
        self.candidates = list(candidates)
        self.excluded = list(excluded)
        super().__init__(path, message)


class AmbiguousSeriesError(SeriesSelectionError):
    """Several series fit equally well; ``candidates`` lists them. Pass ``series_uid`` to choose."""


class NoSeriesError(SeriesSelectionError):
    """No series passes the filters; ``excluded`` says why each was rejected."""


def series_exclusion(series: SeriesInfo, *, modality: str | None = None, allow_derived: bool = False) -> str | None:
    """Why ``series`` may not be chosen automatically, or ``None`` if it may.

    Args:
        series: an indexed series.
        modality: required Modality (case-insensitive), ``None`` for any.
        allow_derived: accept ImageType DERIVED series (``select_series`` passes True and applies its own
            ORIGINAL-first preference).

    Returns:
        A short reason (``"modality MR, not CT"``, ``"RTSTRUCT"``, ``"secondary capture"``, ``"localizer"``,
        ``"DERIVED"``, ``"colour (RGB) images"``, ``"no images"``) or ``None``.
    """
    if modality and series.modality.upper() != modality.upper():
        return f"modality {series.modality or 'unknown'}, not {modality.upper()}"
    kinds = set(series.kinds)
    if "image" not in kinds:
        return "secondary capture" if kinds == {"secondary_capture"} else "/".join(sorted(kinds))
    if series.is_color:
        return "colour (RGB) images"
    if series.is_localizer:
        return "localizer"
    if series.n_images == 0:
        return "no images"
    if series.is_derived and not allow_derived:
        return "DERIVED"
    return None


def _listing(series: Sequence[SeriesInfo]) -> str:
    return "\n".join(f"  {s.describe()}" for s in series)


def select_series(
    index: DicomIndex,
    modality: str | None = "CT",
    series_uid: str | None = None,
    *,
    study_uid: str | None = None,
    orientation: str | None = "AXIAL",
    allow_derived: bool = False,
) -> SeriesInfo:
    """Pick one image series by the rules in this module's docstring.

    Args:
        index: from ``index_dicom_tree``.
        modality: required Modality (``"CT"``, ``"MR"``, ``"PT"``, ...); ``None`` for any.
        series_uid: SeriesInstanceUID to take; overrides every rule except "is an image series".
        study_uid: restrict to one StudyInstanceUID.
        orientation: preferred plane (``"AXIAL"``, ``"CORONAL"``, ``"SAGITTAL"``); ``None``: no preference.
        allow_derived: let ImageType DERIVED series compete with ORIGINAL ones (by default they are only
            taken when no ORIGINAL series is left).

    Returns:
        The chosen ``SeriesInfo``.

    Raises:
        NoSeriesError: ``series_uid`` not in the index, not an image series, or no series passes the
            filters (``excluded`` holds each series with its reason).
        AmbiguousSeriesError: the rules leave more than one series, or candidates span several studies
            (``candidates`` holds them).
    """
    root = index.root
    if series_uid is not None:
        chosen = index.get(series_uid)
        if chosen is None:
            raise NoSeriesError(
                root,
                f"SeriesInstanceUID {series_uid} is not in this folder; series found:\n{_listing(index.series)}",
                candidates=index.series,
            )
        kinds = set(chosen.kinds)
        if "image" not in kinds and kinds != {"secondary_capture"}:
            raise NoSeriesError(root, f"series {series_uid} is a {'/'.join(sorted(kinds))}, not an image series")
        return chosen

    excluded: list[tuple[SeriesInfo, str]] = []
    candidates: list[SeriesInfo] = []
    for s in index.series:
        reason = series_exclusion(s, modality=modality, allow_derived=True)
        if reason is None and study_uid is not None and s.study_uid != study_uid:
            reason = "another study"
        if reason is None:
            candidates.append(s)
        else:
            excluded.append((s, reason))

    if not candidates:
        lines = "\n".join(f"  {s.describe()}  -- excluded: {why}" for s, why in excluded)
        want = f"{modality.upper()} " if modality else ""
        raise NoSeriesError(
            root,
            f"no {want}image series to segment; {CHOOSE}:\n{lines}",
            excluded=excluded,
        )

    studies = {s.study_uid for s in candidates}
    if len(studies) > 1:
        raise AmbiguousSeriesError(
            root,
            f"candidate series belong to {len(studies)} studies; {CHOOSE}:\n"
            f"{_listing(candidates)}",
            candidates=candidates,
            excluded=excluded,
        )

    originals = [s for s in candidates if not s.is_derived]
    if originals and not allow_derived:
        excluded.extend((s, "DERIVED (an ORIGINAL series is there)") for s in candidates if s.is_derived)
        candidates = originals

    if orientation:
        in_plane = [s for s in candidates if s.orientation == orientation.upper()]
        candidates = in_plane or candidates

    most = max(s.n_images for s in candidates)
    best = [s for s in candidates if s.n_images == most]
    if len(best) > 1:
        raise AmbiguousSeriesError(
            root,
            f"{len(best)} series fit equally well ({most} images each); {CHOOSE}:\n{_listing(best)}",
            candidates=best,
            excluded=excluded,
        )
    return best[0]
