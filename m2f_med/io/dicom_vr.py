"""Values longer than their VR allows (PS3.5 6.2, e.g. SH 16 characters), collected per series.

pydicom warns "The value length (18) exceeds the maximum length of 16 allowed for VR SH." once per element
it converts, on the console (its logger) and again as a ``UserWarning``, without naming the file or the
tag: a batch prints it hundreds of times. The values are still read in full, so this is a note, not an
error. We silence that one message and instead check the raw elements ourselves (lengths only, nothing
is decoded), so a loader can put one line per series into ``meta["problems"]`` with the count, the tags
and a file.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["overlong_values", "describe_overlong"]

_MESSAGE = r"The value length \(\d+\) exceeds the maximum length of \d+ allowed for VR"


class _DropOverlong(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "exceeds the maximum length" not in record.getMessage()


def _install_filters() -> None:
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _DropOverlong) for f in logger.filters):
        logger.addFilter(_DropOverlong())
    if not any(f[0] == "ignore" and getattr(f[1], "pattern", None) == _MESSAGE for f in warnings.filters):
        warnings.filterwarnings("ignore", message=_MESSAGE, category=UserWarning)


_install_filters()


def _max_lengths() -> dict[str, int]:
    from pydicom.valuerep import MAX_VALUE_LEN

    return dict(MAX_VALUE_LEN)


def overlong_values(ds: Dataset) -> list[tuple[str, str, int, int]]:
    """Top-level elements whose value (any one of a multi-value) is longer than its VR allows.

    Args:
        ds: a dataset as read (raw elements are inspected without converting them).

    Returns:
        ``[(keyword or tag, VR, length, maximum), ...]``, one per element, in tag order.
    """
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    _install_filters()  # again: a ``warnings.catch_warnings`` block (pytest, a caller) drops our filter on exit
    limits = _max_lengths()
    found = []
    for tag, elem in sorted(ds._dict.items()):
        vr = getattr(elem, "VR", None)
        if vr is None:  # implicit VR: the dictionary's
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr not in limits:
            continue
        value = elem.value
        if value is None:
            continue
        if isinstance(value, bytes):
            parts = [p.rstrip(b" \x00") for p in value.split(b"\\")]
        elif isinstance(value, str):
            parts = [p.rstrip(" \x00") for p in value.split("\\")]
        else:
            try:
                parts = [str(v).rstrip(" \x00") for v in value] if not isinstance(value, (int, float)) else []
            except TypeError:
                parts = []
        longest = max((len(p) for p in parts), default=0)
        if longest > limits[vr]:
            found.append((keyword_for_tag(tag) or str(tag), vr, longest, limits[vr]))
    return found


def describe_overlong(per_file: dict[Path, list[tuple[str, str, int, int]]]) -> str | None:
    """One line for a series: how many values are too long, which tags, and the first file; ``None`` if none.

    Example: ``"3 values longer than their VR allows (kept in full): StationName (SH, 18 > 16) x3, first in
    IM0001"``.
    """
    counts: Counter = Counter()
    first: Path | None = None
    for path, items in per_file.items():
        for keyword, vr, _length, limit in items:
            counts[(keyword, vr, limit)] += 1
            first = first or path
    if not counts:
        return None
    total = sum(counts.values())
    tags = ", ".join(f"{k} ({vr}, > {lim}) x{n}" for (k, vr, lim), n in counts.most_common(5))
    more = f", {len(counts) - 5} more tags" if len(counts) > 5 else ""
    return (f"{total} values longer than their VR allows (kept in full): {tags}{more}; first in "
            f"{first.name if first is not None else '?'}")
