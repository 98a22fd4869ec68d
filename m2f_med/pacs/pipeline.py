"""PACS → predict → PACS: segment what was pulled or received, and send the DICOM-SEGs back."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m2f_med.pacs.target import PacsError

__all__ = ["seg_files", "predict_and_push"]

log = logging.getLogger(__name__)


def seg_files(report: dict[str, Any], output: str | Path) -> list[Path]:
    """The DICOM-SEG files a ``predict`` run wrote (``mask.seg.dcm`` of each finished series)."""
    out = []
    for r in report.get("series", []):
        if r.get("status") in ("done", "resumed"):
            for f in r.get("files", []):
                if str(f).endswith(".seg.dcm"):
                    out.append(Path(output) / r["key"] / f)
    return [p for p in out if p.is_file()]


def predict_and_push(inputs: Sequence[str | Path], output: str | Path, push_to: str | None = None,
                     aet: str | None = None, **predict_kwargs: Any) -> dict[str, Any]:
    """Run :func:`m2f_med.inference.predict.predict` with DICOM-SEG output, then push the SEGs.

    Args:
        inputs: DICOM folders (a pulled study, a received series).
        output: predict's output folder.
        push_to: PACS address to store the SEGs on (``None``: do not push).
        aet: our AE title for DIMSE.
        predict_kwargs: passed to ``predict`` (``bundle``, ``device``, ...); ``formats`` gets ``dicom-seg``.

    Returns:
        ``{"report": predict's report, "segs": [paths], "pushed": n}``.

    Raises:
        PacsError: pushing failed, or a push was asked and no SEG was written (the report's warnings say
            why, e.g. an empty mask).
    """
    from m2f_med.inference.predict import predict
    from m2f_med.pacs.ops import push

    formats = [f.strip() for f in str(predict_kwargs.pop("formats", "nifti")).split(",") if f.strip()]
    if "dicom-seg" not in formats:
        formats.append("dicom-seg")
    report = predict([str(i) for i in inputs], output, formats=",".join(formats), **predict_kwargs)
    segs = seg_files(report, output)
    pushed = 0
    if push_to:
        if not segs:
            why = "; ".join(w for r in report.get("series", []) for w in r.get("warnings", []) or [])
            failed = [r.get("message") or r.get("reason") for r in report.get("series", []) if r["status"] == "failed"]
            raise PacsError(str(push_to), "nothing to push: no DICOM-SEG was written"
                            + (f" ({'; '.join(str(f) for f in failed) or why})" if (failed or why) else ""))
        pushed = push(push_to, segs, aet=aet)
        log.info("pushed %d DICOM-SEG(s)", pushed)
    return {"report": report, "segs": [str(p) for p in segs], "pushed": pushed}
