"""Errors raised by the volume I/O layer.

Every error names the file it concerns and what is wrong with it, so the CLI can print one line and a
batch can record the reason and go on.
"""

from __future__ import annotations

import os

__all__ = ["VolumeError", "DecoderMissingError"]


class VolumeError(ValueError):
    """A file or series could not be read or written.

    Args:
        path: the file or folder concerned.
        message: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike | None, message: str):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class DecoderMissingError(VolumeError):
    """Pixel data uses a transfer syntax for which no decoder is installed.

    Args:
        path: the DICOM file.
        transfer_syntax: the TransferSyntaxUID and its name, e.g. ``"1.2.840.10008.1.2.4.90 (JPEG 2000 Lossless)"``.
        package: the pip package(s) that add a decoder, e.g. ``"pylibjpeg-openjpeg"``.
    """

    def __init__(self, path, transfer_syntax: str, package: str):
        self.transfer_syntax = transfer_syntax
        self.package = package
        super().__init__(path, f"no decoder for transfer syntax {transfer_syntax}; install {package}")
