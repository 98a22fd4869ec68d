"""DIMSE (PS3.7, PS3.4) with ``pynetdicom``: C-ECHO, C-FIND, C-GET, C-MOVE to pull; C-STORE to push.

Our application entity title defaults to ``M2FMED`` (``--aet``). C-MOVE needs the PACS to know that AE
title with our host and the port of the temporary Storage SCP opened for the move (``move_port``); C-GET
needs nothing on the PACS side (the instances come back on the same association), so it is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from m2f_med.pacs.retry import RETRIES, TIMEOUT_S, with_retries
from m2f_med.pacs.target import PacsError, PacsTarget

__all__ = ["DEFAULT_AET", "STORAGE_CLASSES", "echo", "find", "get", "move", "store"]

log = logging.getLogger(__name__)

DEFAULT_AET = "M2FMED"

# storage SOP classes we ask to receive (C-GET SCP role, the listener, C-MOVE destination): volumes and
# the objects that travel with them; one association may propose at most 128 presentation contexts
STORAGE_CLASSES = (
    "CTImageStorage", "EnhancedCTImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "PositronEmissionTomographyImageStorage", "EnhancedPETImageStorage", "SegmentationStorage",
    "RTStructureSetStorage", "SecondaryCaptureImageStorage", "DigitalXRayImageStorageForPresentation",
    "ComputedRadiographyImageStorage", "UltrasoundImageStorage", "NuclearMedicineImageStorage",
    "XRayAngiographicImageStorage", "RTDoseStorage", "RTPlanStorage", "GrayscaleSoftcopyPresentationStateStorage",
    "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
)


class _Refused(Exception):
    """Association not established (peer down, refused, or rejected our AE title)."""


def _ae(aet: str):
    from pynetdicom import AE

    pn_log = logging.getLogger("pynetdicom")
    if pn_log.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() > logging.INFO:
        pn_log.setLevel(logging.CRITICAL)  # its per-attempt socket errors; we report one line at the end
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.connection_timeout = TIMEOUT_S
    return ae


def _associate(ae, target: PacsTarget, what: str, **kw):
    def attempt():
        assoc = ae.associate(target.host, target.port, ae_title=target.aet, **kw)
        if not assoc.is_established:
            raise _Refused()
        return assoc

    try:
        return with_retries(attempt, lambda e: isinstance(e, _Refused), what)
    except _Refused:
        raise PacsError(str(target), f"{what}: no association after {RETRIES} attempts (PACS down, refused, "
                                     "or our AE title is not allowed)") from None


# DIMSE status meanings (PS3.4 C.4, PS3.7 C), for the one-line error
_STATUS = {0x0122: "SOP class not supported", 0x0124: "not authorised", 0xA700: "out of resources",
           0xA701: "out of resources (sub-operations)", 0xA702: "out of resources (sub-operations)",
           0xA801: "move destination unknown", 0xA900: "identifier does not match the SOP class",
           0xC000: "unable to process (unknown study or series?)", 0xFE00: "cancelled"}


def _status_error(target: PacsTarget, what: str, status) -> PacsError:
    if status is None or "Status" not in status:
        return PacsError(str(target), f"{what}: no response (timed out, aborted or invalid)")
    code = int(status.Status)
    meaning = _STATUS.get(code) or ("unable to process" if 0xC000 <= code <= 0xCFFF else "failure")
    return PacsError(str(target), f"{what}: refused with status 0x{code:04X} ({meaning})")


def echo(target: PacsTarget, aet: str = DEFAULT_AET) -> None:
    """C-ECHO (verification). Raises :class:`PacsError` when the PACS does not answer with success."""
    from pynetdicom.sop_class import Verification

    ae = _ae(aet)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, target, "C-ECHO")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status is None or getattr(status, "Status", None) != 0:
        raise _status_error(target, "C-ECHO", status)


def _query(level: str, study_uid: str | None, **keys: Any):
    from pydicom import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = study_uid or ""
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def find(target: PacsTarget, study_uid: str | None = None, patient_id: str | None = None,
         modality: str | None = None, date: str | None = None, aet: str = DEFAULT_AET) -> list[dict[str, Any]]:
    """C-FIND at STUDY level (Study Root). Filters as :func:`m2f_med.pacs.dicomweb.search_studies`.

    Returns:
        One dict per study: ``StudyInstanceUID``, ``StudyDate``, ``ModalitiesInStudy``, ``StudyDescription``,
        ``NumberOfStudyRelatedInstances``.
    """
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FindModel

    ae = _ae(aet)
    ae.add_requested_context(FindModel)
    q = _query("STUDY", study_uid, PatientID=patient_id or "", ModalitiesInStudy=modality or "",
               StudyDate=date or "", StudyDescription="", NumberOfStudyRelatedInstances="")
    assoc = _associate(ae, target, "C-FIND")
    out = []
    try:
        for status, ident in assoc.send_c_find(q, FindModel):
            if status is None or "Status" not in status:
                raise _status_error(target, "C-FIND", status)
            if status.Status in (0xFF00, 0xFF01) and ident is not None:
                mods = ident.get("ModalitiesInStudy", "")
                out.append({"StudyInstanceUID": str(ident.get("StudyInstanceUID", "")),
                            "StudyDate": str(ident.get("StudyDate", "")) or None,
                            "ModalitiesInStudy": list(mods) if not isinstance(mods, str) else [m for m in [mods] if m],
                            "StudyDescription": str(ident.get("StudyDescription", "")) or None,
                            "NumberOfStudyRelatedInstances": ident.get("NumberOfStudyRelatedInstances")})
            elif status.Status != 0:
                raise _status_error(target, "C-FIND", status)
    finally:
        assoc.release()
    return out


def _storage_handler(out_dir: str | Path, written: list[Path]):
    from m2f_med.pacs.store_files import save_instance

    def handle(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        try:
            written.append(save_instance(out_dir, ds))
        except OSError:
            log.exception("cannot write a received instance")
            return 0xA700  # out of resources
        return 0x0000

    return handle


def _check_retrieve(target: PacsTarget, what: str, final, written: list[Path]) -> None:
    if final is None or "Status" not in final:
        raise PacsError(str(target), f"{what}: no final response (timed out or aborted); "
                                     f"{len(written)} instances kept")
    failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
    if final.Status == 0xB000 or failed:
        raise PacsError(str(target), f"{what}: partial study: {len(written)} instances received, {failed} "
                                     f"failed (what arrived is kept; pull again)")
    if final.Status != 0x0000:
        raise _status_error(target, what, final)
    if not written:
        raise PacsError(str(target), f"{what}: nothing matched (unknown study or series UID)")


def get(target: PacsTarget, study_uid: str, out_dir: str | Path, series_uid: str | None = None,
        aet: str = DEFAULT_AET) -> list[Path]:
    """C-GET a study (or series) into ``out_dir/<study>/<series>/<sop>.dcm`` (atomic writes).

    Raises:
        PacsError: no association, a refusal, nothing matched, or a partial retrieve (failed sub-operations).
    """
    import pynetdicom.sop_class as sop
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

    ae = _ae(aet)
    ae.add_requested_context(GetModel)
    roles = []
    for name in STORAGE_CLASSES:
        uid = getattr(sop, name)
        ae.add_requested_context(uid)
        roles.append(build_role(uid, scp_role=True))
    written: list[Path] = []
    handlers = [(evt.EVT_C_STORE, _storage_handler(out_dir, written))]
    level = "SERIES" if series_uid else "STUDY"
    q = _query(level, study_uid, **({"SeriesInstanceUID": series_uid} if series_uid else {}))
    assoc = _associate(ae, target, "C-GET", ext_neg=roles, evt_handlers=handlers)
    final = None
    try:
        for status, _ in assoc.send_c_get(q, GetModel):
            final = status
    finally:
        assoc.release()
    _check_retrieve(target, "C-GET", final, written)
    return written


def move(target: PacsTarget, study_uid: str, out_dir: str | Path, series_uid: str | None = None,
         aet: str = DEFAULT_AET, move_port: int = 11113, bind: str = "0.0.0.0") -> list[Path]:
    """C-MOVE a study (or series) to ourselves: a Storage SCP on ``bind:move_port`` receives it.

    The PACS must list ``aet`` with this host and ``move_port`` as a known modality.

    Raises:
        PacsError: as :func:`get`; also when ``move_port`` cannot be opened.
    """
    import pynetdicom.sop_class as sop
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MoveModel

    written: list[Path] = []
    scp = _ae(aet)
    for name in STORAGE_CLASSES:
        scp.add_supported_context(getattr(sop, name))
    try:
        server = scp.start_server((bind, int(move_port)), block=False,
                                  evt_handlers=[(evt.EVT_C_STORE, _storage_handler(out_dir, written))])
    except OSError as err:
        raise PacsError(str(target), f"C-MOVE: cannot listen on port {move_port}: {err.strerror or err}") from None
    try:
        ae = _ae(aet)
        ae.add_requested_context(MoveModel)
        level = "SERIES" if series_uid else "STUDY"
        q = _query(level, study_uid, **({"SeriesInstanceUID": series_uid} if series_uid else {}))
        assoc = _associate(ae, target, "C-MOVE")
        final = None
        try:
            for status, _ in assoc.send_c_move(q, aet, MoveModel):
                final = status
        finally:
            assoc.release()
    finally:
        server.shutdown()
    if final is not None and final.get("Status") == 0xA801:
        raise PacsError(str(target), f"C-MOVE: the PACS does not know the destination AE {aet!r} "
                                     f"(add {aet} with this host and port {move_port} to it)")
    _check_retrieve(target, "C-MOVE", final, written)
    return written


def store(target: PacsTarget, files: Sequence[str | Path] | Iterable, aet: str = DEFAULT_AET) -> int:
    """C-STORE DICOM files (e.g. our DICOM-SEG) on one association.

    Returns:
        The number of instances stored.

    Raises:
        PacsError: an unreadable file (names it), no association, or a refused store.
    """
    import pydicom

    datasets = []
    for f in files:
        try:
            datasets.append((Path(f), pydicom.dcmread(str(f))))
        except Exception as err:  # noqa: BLE001
            raise PacsError(f, f"not a DICOM file: {err}") from None
    if not datasets:
        return 0
    ae = _ae(aet)
    for uid in sorted({str(ds.SOPClassUID) for _, ds in datasets}):
        ae.add_requested_context(uid, [str(ds.file_meta.TransferSyntaxUID) for _, ds in datasets
                                       if str(ds.SOPClassUID) == uid][:1] + ["1.2.840.10008.1.2.1"])
    assoc = _associate(ae, target, "C-STORE")
    n = 0
    try:
        for path, ds in datasets:
            status = assoc.send_c_store(ds)
            if status is None or getattr(status, "Status", None) not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise _status_error(target, f"C-STORE {path.name}", status)
            n += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return n
