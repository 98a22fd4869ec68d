"""Where real sample data lives.

m2f-med does not ship patient images. Tests, benchmarks and the sample job read them from a local data
folder: ``$M2F_MED_DATA`` if set, else ``../shared/data`` beside the repository checkout (the layout of the
project's development machines). See the README for the sources and licenses of that data.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "data_dir", "repo_root"]

DATA_ENV = "M2F_MED_DATA"


def repo_root() -> Path:
    """The repository checkout this package was installed from (editable install) or its site folder."""
    return Path(__file__).resolve().parent.parent


def data_dir(required: bool = False) -> Path | None:
    """The local real-data folder.

    Args:
        required: raise instead of returning ``None`` when the folder does not exist.

    Returns:
        ``Path`` to the data folder, or ``None`` if it does not exist and ``required`` is false.

    Raises:
        FileNotFoundError: ``required`` is true and neither ``$M2F_MED_DATA`` nor ``../shared/data`` exists.
    """
    env = os.environ.get(DATA_ENV)
    candidate = Path(env).expanduser() if env else repo_root().parent / "shared" / "data"
    if candidate.is_dir():
        return candidate
    if required:
        raise FileNotFoundError(
            f"real data folder not found at {candidate}; set {DATA_ENV} to the folder holding the sample data"
        )
    return None
