"""A MONAI image writer that writes atomically, for ``SaveImaged`` in bundle pipelines.

``monai.data.NibabelWriter`` calls ``nibabel.save`` on the final path; a run killed mid-write leaves a
truncated ``.nii.gz`` that looks like a result. This writer saves to a temporary file beside it and renames
(``m2f_med.io.atomic.atomic_write``); everything else (orientation, resampling, dtype) is MONAI's.
"""

from __future__ import annotations

import os

from monai.data import NibabelWriter

from m2f_med.io.atomic import atomic_write

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """``monai.data.NibabelWriter`` whose ``write`` goes through a temporary file and ``os.replace``.

    Use as ``SaveImaged(..., writer=AtomicNibabelWriter)``. Arguments as ``NibabelWriter``.
    """

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs) -> None:
        """Write the data set by ``set_data_array`` / ``set_metadata`` to ``filename`` (NIfTI) atomically.

        Raises:
            Whatever nibabel raises; the temporary file is removed and ``filename`` is left untouched.
        """
        with atomic_write(filename) as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)
