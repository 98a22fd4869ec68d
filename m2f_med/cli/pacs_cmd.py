"""``m2f-med pull``, ``push``, ``search`` and ``listen``: PACS I/O (DICOMweb URL or ``AET@host:port``).

Credentials only from ``M2F_MED_PACS_TOKEN`` / ``M2F_MED_PACS_USER`` + ``M2F_MED_PACS_PASSWORD`` or the
file named by ``M2F_MED_PACS_CREDENTIALS`` (:mod:`m2f_med.pacs.credentials`); never from arguments. Errors
(a PACS that is down, refuses, times out or returns a partial study) are one line and exit code 2 after
bounded retries. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

__all__ = ["add_parser"]

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aet", default="M2FMED", help="our DICOM AE title (DIMSE; default M2FMED)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each step")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pull``, ``push``, ``search`` and ``listen``."""
    target_help = "PACS: http(s)://host/dicom-web (DICOMweb) or AET@host:port (DIMSE)"
    p = subparsers.add_parser("pull", help="retrieve a study or series from a PACS into a folder",
                              description="WADO-RS (DICOMweb) or C-GET / C-MOVE (DIMSE) into "
                              "OUTDIR/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm.")
    p.add_argument("target", metavar="URL_OR_AE", help=target_help)
    p.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
    p.add_argument("--series", default=None, metavar="UID", help="only this SeriesInstanceUID")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    p.add_argument("--method", default="get", choices=("get", "move"), help="DIMSE retrieve: C-GET or C-MOVE")
    p.add_argument("--move-port", type=int, default=11113, help="C-MOVE: port our Storage SCP listens on")
    _common(p)
    p.set_defaults(func=_pull)

    p = subparsers.add_parser("push", help="store DICOM files (e.g. DICOM-SEGs) on a PACS",
                              description="STOW-RS (DICOMweb) or C-STORE (DIMSE).")
    p.add_argument("target", metavar="URL_OR_AE", help=target_help)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _common(p)
    p.set_defaults(func=_push)

    p = subparsers.add_parser("search", help="find studies on a PACS (QIDO-RS or C-FIND)")
    p.add_argument("target", metavar="URL_OR_AE", help=target_help)
    p.add_argument("--study", default=None, metavar="UID")
    p.add_argument("--patient-id", default=None)
    p.add_argument("--modality", default=None)
    p.add_argument("--date", default=None, help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    _common(p)
    p.set_defaults(func=_search)

    p = subparsers.add_parser(
        "listen", help="C-STORE SCP: segment each received series and send the SEG on",
        description="Receive studies (C-STORE), segment each series once no instance of it has arrived for "
        "--quiet seconds, write the outputs under OUTDIR, and send the DICOM-SEG to --push. Received files "
        "are kept under OUTDIR/incoming; series not finished before a crash are processed at the next start.")
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on (default all)")
    p.add_argument("--bundle", type=Path, default=None, help="MONAI bundle folder (default: the shipped one)")
    p.add_argument("-o", "--output", type=Path, default=Path("m2f-med-listen"), metavar="OUTDIR")
    p.add_argument("--push", default=None, metavar="URL_OR_AE", help="where to send the SEGs (default: nowhere)")
    p.add_argument("--quiet", type=float, default=30.0, metavar="S",
                   help="seconds without new instances after which a series is complete (default 30)")
    p.add_argument("--device", default="cpu")
    _common(p)
    p.set_defaults(func=_listen)


def _pull(args: argparse.Namespace) -> int:
    from m2f_med.pacs.ops import pull

    files = pull(args.target, args.study, args.output, series_uid=args.series, method=args.method,
                 aet=args.aet, move_port=args.move_port)
    print(f"{len(files)} instances in {args.output}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from m2f_med.pacs.ops import push

    n = push(args.target, args.files, aet=args.aet)
    print(f"{n} instances stored")
    return 0


def _search(args: argparse.Namespace) -> int:
    from m2f_med.pacs.ops import search

    studies = search(args.target, aet=args.aet, study_uid=args.study, patient_id=args.patient_id,
                     modality=args.modality, date=args.date)
    print(json.dumps(studies, indent=1, default=str))
    return 0


def _listen(args: argparse.Namespace) -> int:
    from m2f_med.pacs.listener import Listener
    from m2f_med.pacs.pipeline import predict_and_push
    from m2f_med.pacs.target import parse_target

    if args.push:
        parse_target(args.push)  # a bad address fails now, not at the first series
    out = Path(args.output)

    def process(series: Path) -> dict:
        result = predict_and_push([series], out / "results" / series.parent.name / series.name,
                                  push_to=args.push, aet=args.aet, bundle=args.bundle, device=args.device,
                                  quiet=True)
        return {"segs": result["segs"], "pushed": result["pushed"], "summary": result["report"]["summary"]}

    listener = Listener(out / "incoming", process, aet=args.aet, port=args.port, bind=args.bind,
                        quiet_s=args.quiet)
    try:
        listener.start()
    except OSError as err:
        print(f"m2f-med: error: cannot listen on {args.bind}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"listening as {args.aet} on {args.bind}:{args.port}; Ctrl-C to stop", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    listener.stop()
    return 0
