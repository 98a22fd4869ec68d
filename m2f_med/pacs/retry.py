"""Bounded retries with exponential back-off for PACS calls (never an endless wait)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["with_retries", "RETRIES", "TIMEOUT_S"]

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 3  # attempts in all, for errors worth retrying (connection refused/reset, timeout, HTTP 5xx)
TIMEOUT_S = 30.0  # per network operation


def with_retries(call: Callable[[], T], transient: Callable[[BaseException], bool], what: str,
                 attempts: int = RETRIES, backoff_s: float = 0.5) -> T:
    """Call ``call()`` up to ``attempts`` times while ``transient(error)`` holds, waiting 0.5, 1, 2 ... s.

    Args:
        call: the operation.
        transient: whether an exception is worth another attempt; others propagate at once.
        what: a short description for the log (no credentials, no patient data).
        attempts: total attempts, >= 1.
        backoff_s: first wait; doubled after each failure.

    Returns:
        What ``call`` returns.

    Raises:
        The last exception once the attempts are used up, or the first non-transient one.
    """
    for i in range(max(1, attempts)):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - classified by `transient`
            if not transient(err) or i == attempts - 1:
                raise
            log.warning("%s failed (%s); retry %d of %d", what, type(err).__name__, i + 1, attempts - 1)
            time.sleep(backoff_s * 2**i)
    raise AssertionError("unreachable")  # pragma: no cover
