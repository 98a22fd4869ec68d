"""Naming a PACS: ``http(s)://...`` (DICOMweb) or ``AET@host:port`` (DIMSE), and the one error type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from m2f_med.io.errors import VolumeError

__all__ = ["PacsError", "PacsTarget", "parse_target"]

_AE = re.compile(r"^(?P<aet>[^@\s\\]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


class PacsError(VolumeError):
    """A PACS could not be reached, refused, timed out or returned less than asked (one line).

    Args:
        target: the PACS as shown to the user (``AET@host:port`` or the URL without credentials).
        message: what went wrong and, where useful, what to do.
    """


@dataclass(frozen=True)
class PacsTarget:
    """A parsed PACS address.

    Attributes:
        kind: ``"dicomweb"`` or ``"dimse"``.
        url: the DICOMweb base URL (no user info), or ``None``.
        aet, host, port: the DIMSE peer (called AE title, host, TCP port), or ``None``.
    """

    kind: str
    url: str | None = None
    aet: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return self.url if self.kind == "dicomweb" else f"{self.aet}@{self.host}:{self.port}"


def parse_target(text: str | PacsTarget) -> PacsTarget:
    """Parse ``http(s)://host[:port]/path`` or ``AET@host:port``.

    Args:
        text: the address. A URL must not carry credentials (``user:pass@``): they would end up in shell
            history and logs; use ``M2F_MED_PACS_USER`` / ``..._PASSWORD`` / ``..._TOKEN`` or a file.

    Returns:
        The :class:`PacsTarget`.

    Raises:
        PacsError: anything else (names the expected forms), or credentials in the URL.
    """
    if isinstance(text, PacsTarget):
        return text
    text = str(text).strip()
    if text.lower().startswith(("http://", "https://")):
        parts = urlsplit(text)
        if parts.username or parts.password:
            safe = urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))
            raise PacsError(safe, "credentials are not accepted in the URL; set M2F_MED_PACS_USER and "
                                  "M2F_MED_PACS_PASSWORD (or M2F_MED_PACS_TOKEN), or M2F_MED_PACS_CREDENTIALS")
        if not parts.hostname:
            raise PacsError(text, "DICOMweb URL has no host")
        return PacsTarget("dicomweb", url=text.rstrip("/"))
    m = _AE.match(text)
    if m and 0 < int(m["port"]) < 65536:
        return PacsTarget("dimse", aet=m["aet"], host=m["host"], port=int(m["port"]))
    raise PacsError(None, f"not a PACS address: {text!r}; use http(s)://host/dicom-web (DICOMweb) or "
                          "AET@host:port (DIMSE)")
