"""``pull`` / ``push`` / ``search`` whatever the protocol: DICOMweb for URLs, DIMSE for ``AET@host:port``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m2f_med.pacs.target import PacsError, PacsTarget, parse_target

__all__ = ["pull", "push", "search"]


def pull(target: str | PacsTarget, study_uid: str, out_dir: str | Path, series_uid: str | None = None,
         method: str = "get", aet: str | None = None, move_port: int = 11113) -> list[Path]:
    """Retrieve a study (or one series) into ``out_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOP>.dcm``.

    Args:
        target: ``http(s)://...`` (WADO-RS) or ``AET@host:port`` (C-GET, or C-MOVE with ``method="move"``).
        study_uid: StudyInstanceUID.
        out_dir: destination root; files are written atomically, existing ones are replaced.
        series_uid: only this SeriesInstanceUID.
        method: DIMSE only: ``"get"`` (default) or ``"move"``.
        aet: our AE title (DIMSE; default ``M2FMED``).
        move_port: C-MOVE only: the port our temporary Storage SCP listens on.

    Returns:
        The files written.

    Raises:
        PacsError: see :mod:`m2f_med.pacs.dicomweb` / :mod:`m2f_med.pacs.dimse`.
    """
    t = parse_target(target)
    if not study_uid:
        raise PacsError(str(t), "give --study UID")
    if t.kind == "dicomweb":
        from m2f_med.pacs.dicomweb import retrieve

        return retrieve(t, study_uid, out_dir, series_uid=series_uid)
    from m2f_med.pacs import dimse

    kw = {"aet": aet or dimse.DEFAULT_AET}
    if method == "move":
        return dimse.move(t, study_uid, out_dir, series_uid=series_uid, move_port=move_port, **kw)
    if method != "get":
        raise PacsError(str(t), f"unknown retrieve method {method!r}; use get or move")
    return dimse.get(t, study_uid, out_dir, series_uid=series_uid, **kw)


def push(target: str | PacsTarget, files: Sequence[str | Path], aet: str | None = None) -> int:
    """Store DICOM files (STOW-RS or C-STORE). Returns the number stored; raises :class:`PacsError`."""
    t = parse_target(target)
    if t.kind == "dicomweb":
        from m2f_med.pacs.dicomweb import store

        return store(t, files)
    from m2f_med.pacs import dimse

    return dimse.store(t, files, aet=aet or dimse.DEFAULT_AET)


def search(target: str | PacsTarget, aet: str | None = None, **filters: Any) -> list[dict[str, Any]]:
    """Study search (QIDO-RS or C-FIND) by ``study_uid``, ``patient_id``, ``modality``, ``date``."""
    t = parse_target(target)
    if t.kind == "dicomweb":
        from m2f_med.pacs.dicomweb import search_studies

        return search_studies(t, **filters)
    from m2f_med.pacs import dimse

    return dimse.find(t, aet=aet or dimse.DEFAULT_AET, **filters)
