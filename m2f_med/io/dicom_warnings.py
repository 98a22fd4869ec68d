"""pydicom's warnings, counted per series instead of printed once per element.

pydicom reports a non-conforming value (e.g. "The value length (18) exceeds the maximum length of 16
allowed for VR SH.") on its ``"pydicom"`` logger and again as a ``UserWarning``
(``pydicom.misc.warn_and_log``), without naming the file or the tag: a batch of 158 slices prints it 316
times. Inside :func:`collect_pydicom_warnings` both copies are kept off the console and counted per
(message, tag, file); :meth:`PydicomWarnings.lines` gives one line per message for a series' ``problems``
or a run report: count, tag keyword, first file and number of files.

The collector is per thread (a prefetching loader thread keeps its own). The tag and file are found on the
call stack at the moment pydicom warns: the ``DataElement`` / ``RawDataElement`` being converted and the nearest ``Dataset``
that was read from a file (``Dataset.filename``; as ``self``, ``ds`` or ``dataset`` of a frame). Messages not attributable this way are counted with
``tag``/``file`` empty.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PydicomWarnings", "collect_pydicom_warnings", "problems_with_pydicom_warnings"]

_local = threading.local()
_install_lock = threading.Lock()
_active = 0  # collectors open in any thread: while > 0 pydicom's duplicate UserWarnings are dropped


class PydicomWarnings:
    """Counts of pydicom warnings: ``counts[(message, tag keyword, file)]``."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def __len__(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """One line per distinct message, most frequent first, e.g.
        ``pydicom warned 158x in 158 files (tag StationName, first 000001.dcm): The value length (18) ...``."""
        by_msg: dict[str, Counter[tuple[str, str]]] = {}
        for (msg, tag, file), n in self.counts.items():
            by_msg.setdefault(msg, Counter())[(tag, file)] += n
        out = []
        for msg, where in sorted(by_msg.items(), key=lambda kv: -sum(kv[1].values())):
            total = sum(where.values())
            tags = sorted({t for t, _ in where if t})
            files = sorted({f for _, f in where if f})
            detail = []
            if tags:
                detail.append("tag " + ", ".join(tags[:3]) + (f" and {len(tags) - 3} more" if len(tags) > 3 else ""))
            if files:
                detail.append(f"{len(files)} files, first {Path(files[0]).name}")
            out.append(f"pydicom warned {total}x" + (f" ({'; '.join(detail)})" if detail else "") + f": {msg}")
        return out


def _where() -> tuple[str, str]:
    """(tag keyword, file) from the frames of the pydicom call that is warning."""
    tag = file = ""
    frame = sys._getframe(2)
    for _ in range(60):
        if frame is None or (tag and file):
            break
        obj = frame.f_locals.get("self")
        if not tag:
            for cand in (obj, frame.f_locals.get("raw"), frame.f_locals.get("elem")):
                t = getattr(cand, "tag", None) if type(cand).__name__ in ("DataElement", "RawDataElement") else None
                if t is not None:
                    from pydicom.datadict import keyword_for_tag
                    from pydicom.tag import Tag

                    t = Tag(t)
                    tag = keyword_for_tag(t) or f"({t.group:04X},{t.element:04X})"
                    break
        if not file:
            for cand in (obj, frame.f_locals.get("ds"), frame.f_locals.get("dataset")):
                if type(cand).__name__ in ("Dataset", "FileDataset"):
                    name = getattr(cand, "filename", None)
                    if isinstance(name, str) and name:
                        file = name
                        break
        frame = frame.f_back
    return tag, file


class _Divert(logging.Filter):
    """On the ``pydicom`` logger: a record from a thread with an open collector is counted, not emitted."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(_local, "sink", None)
        if sink is None or record.levelno > logging.WARNING:
            return True
        tag, file = _where()
        sink.counts[(record.getMessage(), tag, file)] += 1
        return False


_DIVERT = _Divert()


@contextmanager
def collect_pydicom_warnings() -> Iterator[PydicomWarnings]:
    """Count pydicom's warnings in this thread instead of printing them. A nested collector counts what
    happens inside it only (the outer one resumes after it).

    Yields:
        The :class:`PydicomWarnings` being filled.
    """
    global _active
    outer = getattr(_local, "sink", None)
    sink = PydicomWarnings()
    with _install_lock:
        pyd_log = logging.getLogger("pydicom")
        if _DIVERT not in pyd_log.filters:
            pyd_log.addFilter(_DIVERT)
        if _active == 0:
            # warn_and_log logs first, then repeats the message as a UserWarning attributed to pydicom
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
        _active += 1
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer
        with _install_lock:
            _active -= 1
            if _active == 0:
                warnings.filters[:] = [  # noqa: E501 - remove exactly the filter added above
                    f for f in warnings.filters
                    if not (f[0] == "ignore" and f[2] is UserWarning and f[3] is not None
                            and getattr(f[3], "pattern", "") == r"pydicom(\.|$)")
                ]
                getattr(warnings, "_filters_mutated", lambda: None)()


def problems_with_pydicom_warnings(load):
    """Decorate a loader returning a volume: pydicom's warnings while it runs become lines of the volume's
    ``meta["problems"]`` (see :meth:`PydicomWarnings.lines`) instead of console output."""
    import functools

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        with collect_pydicom_warnings() as sink:
            vol = load(*args, **kwargs)
        if len(sink) and getattr(vol, "meta", None) is not None:
            vol.meta.setdefault("problems", []).extend(sink.lines())
        return vol

    return wrapper
