"""Atomic file writes: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, and a batch killed mid-write leaves no partial output that looks
complete (the temporary name starts with ``.`` and ends with ``.partial``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write"]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import; os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    The temporary file keeps the final suffixes (e.g. ``.nii.gz``) so libraries that choose the format by
    extension (nibabel, SimpleITK) write the right one.

    Args:
        path: final destination. Its parent folder is created if missing.

    Yields:
        The temporary path to write to.

    Raises:
        Whatever the body raises; the temporary file is removed first.
    """
    final = Path(path)
    if final.is_dir():  # os.replace would fail only after the whole file was written, naming the temporary
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{suffix}", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the final file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
