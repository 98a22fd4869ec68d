"""DICOMweb (PS3.18) with ``dicomweb-client``: QIDO-RS search, WADO-RS retrieve, STOW-RS store."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from m2f_med.pacs.credentials import Credentials, load_credentials
from m2f_med.pacs.retry import RETRIES, TIMEOUT_S, with_retries
from m2f_med.pacs.target import PacsError, PacsTarget

__all__ = ["client", "search_studies", "retrieve", "store"]

log = logging.getLogger(__name__)


def client(target: PacsTarget, credentials: Credentials | None = None, timeout_s: float = TIMEOUT_S):
    """A ``dicomweb_client.DICOMwebClient`` for ``target.url`` with the configured credentials."""
    import requests
    from dicomweb_client import DICOMwebClient

    creds = load_credentials() if credentials is None else credentials
    session = requests.Session()
    if creds.user:
        session.auth = (creds.user, creds.password or "")
    web = DICOMwebClient(url=target.url, session=session, headers=creds.headers() or None, timeout=timeout_s)
    web.set_http_retry_params(retry=False)  # one bounded retry policy (ours), not two nested ones
    return web


def _transient(err: BaseException) -> bool:
    import requests

    if isinstance(err, (requests.ConnectionError, requests.Timeout)):
        return True
    response = getattr(err, "response", None)
    return isinstance(err, requests.HTTPError) and response is not None and response.status_code >= 500


def _explain(target: PacsTarget, err: BaseException, what: str) -> PacsError:
    import requests

    if isinstance(err, requests.Timeout):
        return PacsError(str(target), f"{what}: timed out after {RETRIES} attempts")
    if isinstance(err, requests.ConnectionError):
        return PacsError(str(target), f"{what}: cannot connect (is the PACS up? refused or unreachable) "
                                      f"after {RETRIES} attempts")
    response = getattr(err, "response", None)
    if response is not None:
        code = response.status_code
        hint = {401: "not authorised: set M2F_MED_PACS_USER/_PASSWORD or _TOKEN", 403: "forbidden",
                404: "not found"}.get(code, response.reason or "")
        return PacsError(str(target), f"{what}: HTTP {code} {hint}".rstrip())
    return PacsError(str(target), f"{what}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def _call(target: PacsTarget, what: str, fn):
    try:
        return with_retries(fn, _transient, what)
    except PacsError:
        raise
    except Exception as err:  # noqa: BLE001 - turned into one line
        raise _explain(target, err, what) from None


def _value(item: dict, tag: str) -> Any:
    v = item.get(tag, {}).get("Value")
    return v[0] if v else None


def search_studies(target: PacsTarget, study_uid: str | None = None, patient_id: str | None = None,
                   modality: str | None = None, date: str | None = None, limit: int | None = None,
                   credentials: Credentials | None = None) -> list[dict[str, Any]]:
    """QIDO-RS study search.

    Args:
        study_uid, patient_id, modality (``ModalitiesInStudy``), date (``StudyDate``, ``YYYYMMDD`` or a
            range ``YYYYMMDD-YYYYMMDD``): filters; ``None`` = any.
        limit: at most this many studies.

    Returns:
        One dict per study: ``StudyInstanceUID``, ``StudyDate``, ``ModalitiesInStudy`` (list),
        ``StudyDescription``, ``NumberOfStudyRelatedInstances``.

    Raises:
        PacsError: down, refused, timeout (after bounded retries) or an HTTP error.
    """
    filters = {k: v for k, v in (("StudyInstanceUID", study_uid), ("PatientID", patient_id),
                                 ("ModalitiesInStudy", modality), ("StudyDate", date)) if v}
    web = client(target, credentials)
    found = _call(target, "QIDO-RS study search", lambda: web.search_for_studies(
        search_filters=filters, limit=limit,
        fields=["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]))
    out = []
    for item in found:
        mods = item.get("00080061", {}).get("Value") or []
        out.append({"StudyInstanceUID": _value(item, "0020000D"), "StudyDate": _value(item, "00080020"),
                    "ModalitiesInStudy": list(mods), "StudyDescription": _value(item, "00081030"),
                    "NumberOfStudyRelatedInstances": _value(item, "00201208")})
    return out


def _series_of(web, target: PacsTarget, study_uid: str) -> list[tuple[str, int | None]]:
    found = _call(target, "QIDO-RS series search", lambda: web.search_for_series(
        study_instance_uid=study_uid, fields=["NumberOfSeriesRelatedInstances"]))
    series = [(_value(s, "0020000E"), _value(s, "00201209")) for s in found]
    return [(uid, None if n is None else int(n)) for uid, n in series if uid]


def retrieve(target: PacsTarget, study_uid: str, out_dir: str | Path, series_uid: str | None = None,
             credentials: Credentials | None = None) -> list[Path]:
    """WADO-RS retrieve of a study (or one series) into ``out_dir/<study>/<series>/<sop>.dcm``.

    Each instance is written atomically as it arrives; the count per series is checked against QIDO-RS
    ``NumberOfSeriesRelatedInstances``.

    Returns:
        The files written.

    Raises:
        PacsError: study/series not found, a partial retrieve (names how many of how many), or a
            connection problem (bounded retries).
    """
    from m2f_med.pacs.store_files import save_instance

    web = client(target, credentials)
    series = _series_of(web, target, study_uid)
    if series_uid:
        series = [s for s in series if s[0] == series_uid]
    if not series:
        raise PacsError(str(target), f"study {study_uid}" + (f" series {series_uid}" if series_uid else "")
                        + ": not found")
    written: list[Path] = []
    for uid, expected in series:
        instances = _call(target, "WADO-RS retrieve", lambda uid=uid: web.retrieve_series(study_uid, uid))
        for ds in instances:
            written.append(save_instance(out_dir, ds))
        if expected is not None and len(instances) < expected:
            raise PacsError(str(target), f"partial study: series {uid} gave {len(instances)} of {expected} "
                                         "instances (what arrived is kept; pull again)")
        log.info("retrieved series %s: %d instances", uid, len(instances))
    return written


def store(target: PacsTarget, files: Sequence[str | Path] | Iterable, credentials: Credentials | None = None) -> int:
    """STOW-RS store of DICOM files (e.g. our DICOM-SEG), one request per file.

    Returns:
        The number of instances stored.

    Raises:
        PacsError: an unreadable file (names it), or the PACS refused / was unreachable.
    """
    import pydicom

    web = client(target, credentials)
    n = 0
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as err:  # noqa: BLE001
            raise PacsError(f, f"not a DICOM file: {err}") from None
        result = _call(target, "STOW-RS store", lambda ds=ds: web.store_instances(datasets=[ds]))
        failed = result.get("00081198", {}).get("Value") if hasattr(result, "get") else None
        if failed:
            raise PacsError(str(target), f"STOW-RS refused {Path(f).name}")
        n += 1
    return n
