"""PACS I/O: pull studies from and push DICOM-SEGs to a PACS, over DICOMweb or DIMSE.

A PACS is named by one string (:func:`parse_target`): ``http(s)://host/dicom-web`` for DICOMweb
(``dicomweb-client``: QIDO-RS search, WADO-RS retrieve, STOW-RS store; DICOM PS3.18) or ``AET@host:port``
for DIMSE (``pynetdicom``: C-ECHO, C-FIND, C-GET / C-MOVE, C-STORE; DICOM PS3.7 / PS3.4). Credentials come
only from the environment or a file (:mod:`m2f_med.pacs.credentials`) and are never logged. Every network
call has a timeout and a bounded retry (:mod:`m2f_med.pacs.retry`); failures raise :class:`PacsError`, one
line. The ``m2f-med listen`` C-STORE SCP is :mod:`m2f_med.pacs.listener`.

Submodules import their network libraries lazily, so ``import m2f_med.pacs`` is cheap.
"""

from m2f_med.pacs.target import PacsError, PacsTarget, parse_target

__all__ = ["PacsError", "PacsTarget", "parse_target", "pull", "push"]


def pull(target, study_uid: str, out_dir, series_uid: str | None = None, **kwargs):
    """Retrieve a study (or one series) into ``out_dir``; see :func:`m2f_med.pacs.ops.pull`."""
    from m2f_med.pacs.ops import pull as _pull

    return _pull(target, study_uid, out_dir, series_uid=series_uid, **kwargs)


def push(target, files, **kwargs):
    """Store DICOM files on a PACS; see :func:`m2f_med.pacs.ops.push`."""
    from m2f_med.pacs.ops import push as _push

    return _push(target, files, **kwargs)
