"""npe2 sample data: the TotalSegmentator example CT (Apache-2.0), read from the local data folder.

m2f-med ships no patient images; ``m2f_med.data.data_dir()`` (``$M2F_MED_DATA`` or ``../shared/data``)
holds them. See the repository README for the source and licence.
"""

from __future__ import annotations

from pathlib import Path

from napari_m2f_med._reader import read_dicom_folder, read_image_file

__all__ = ["sample_ct", "sample_ct_dicom", "SAMPLE_CT", "SAMPLE_CT_DICOM"]

SAMPLE_CT = Path("totalsegmentator") / "example_ct.nii.gz"
"""The sample CT inside the data folder: 122×101×112 voxels at 3 mm, abdomen/thorax."""

SAMPLE_CT_DICOM = Path("totalsegmentator") / "example_ct_dicom"
"""The same study's DICOM series: 20 slices of 512×512 at 0.977 mm, 2 mm apart (JPEG 2000)."""


def _sample(relative: Path) -> Path:
    from m2f_med.data import DATA_ENV, data_dir

    root = data_dir(required=True)
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: sample data missing; set {DATA_ENV} to the folder holding {relative}"
        )
    return path


def sample_ct() -> list:
    """The sample CT as an Image layer (HU, soft-tissue window, 3 mm voxels).

    Returns:
        napari layer data tuples.

    Raises:
        FileNotFoundError: the data folder or the file is missing.
    """
    return read_image_file(_sample(SAMPLE_CT), modality="CT")


def sample_ct_dicom() -> list:
    """The sample CT DICOM series as an Image layer (read like a folder opened from disk).

    Returns:
        napari layer data tuples.

    Raises:
        FileNotFoundError: the data folder or the series is missing.
    """
    return read_dicom_folder(_sample(SAMPLE_CT_DICOM))
