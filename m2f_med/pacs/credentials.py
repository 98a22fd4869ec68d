"""PACS credentials from the environment or a file, never from the command line, never logged.

Sources, first found wins:

* ``M2F_MED_PACS_TOKEN``: an HTTP bearer token (DICOMweb);
* ``M2F_MED_PACS_USER`` and ``M2F_MED_PACS_PASSWORD``: HTTP basic authentication (DICOMweb);
* ``M2F_MED_PACS_CREDENTIALS``: path of a file holding ``{"token": ...}`` or ``{"user": ..., "password":
  ...}`` (JSON), or one line ``user:password``, or one line ``token``. Keep it readable by you only.

DIMSE has no passwords in the standard association (PS3.7 user identity negotiation is not used here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from m2f_med.pacs.target import PacsError

__all__ = ["Credentials", "load_credentials", "ENV_TOKEN", "ENV_USER", "ENV_PASSWORD", "ENV_FILE"]

ENV_TOKEN = "M2F_MED_PACS_TOKEN"
ENV_USER = "M2F_MED_PACS_USER"
ENV_PASSWORD = "M2F_MED_PACS_PASSWORD"
ENV_FILE = "M2F_MED_PACS_CREDENTIALS"


@dataclass(frozen=True)
class Credentials:
    """HTTP credentials; ``repr`` hides the secrets so a log line or traceback cannot show them."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        kind = "token" if self.token else "basic" if self.user else "none"
        return f"Credentials({kind})"

    def headers(self) -> dict[str, str]:
        """``Authorization`` header for a bearer token (basic auth goes through the requests session)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def load_credentials(environ: dict | None = None) -> Credentials:
    """Read the credentials (see the module docstring).

    Args:
        environ: mapping to read instead of ``os.environ`` (tests).

    Returns:
        :class:`Credentials`, empty when none are configured.

    Raises:
        PacsError: the credentials file is missing, unreadable or malformed (names the file, not its content).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_TOKEN):
        return Credentials(token=env[ENV_TOKEN])
    if env.get(ENV_USER):
        return Credentials(user=env[ENV_USER], password=env.get(ENV_PASSWORD, ""))
    path = env.get(ENV_FILE)
    if not path:
        return Credentials()
    p = Path(path).expanduser()
    try:
        text = p.read_text().strip()
    except OSError as err:
        raise PacsError(p, f"cannot read the PACS credentials file: {err.strerror or err}") from None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise PacsError(p, "PACS credentials file is not valid JSON") from None
        if data.get("token"):
            return Credentials(token=str(data["token"]))
        if data.get("user"):
            return Credentials(user=str(data["user"]), password=str(data.get("password", "")))
        raise PacsError(p, 'PACS credentials file needs "token" or "user" and "password"')
    line = text.splitlines()[0] if text else ""
    if not line:
        raise PacsError(p, "PACS credentials file is empty")
    if ":" in line:
        user, password = line.split(":", 1)
        return Credentials(user=user, password=password)
    return Credentials(token=line)
