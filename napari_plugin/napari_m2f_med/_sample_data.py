"""npe2 sample data: the TotalSegmentator example CT (Apache-2.0), read from the local data folder.

m2f-med ships no patient images; ``m2f_med.sample_data.sample_ct_path`` finds them in the data folder
(``$M2F_MED_DATA`` or ``../shared/data``) or downloads them once with a checksum. See the repository README
for the source and licence.
"""

from __future__ import annotations

from pathlib import Path

from napari_m2f_med._reader import read_dicom_folder, read_image_file

__all__ = ["sample_ct", "sample_ct_dicom", "SAMPLE_CT", "SAMPLE_CT_DICOM"]

SAMPLE_CT = Path("totalsegmentator") / "example_ct.nii.gz"
"""The sample CT inside the data folder: 122×101×112 voxels at 3 mm, abdomen/thorax."""

SAMPLE_CT_DICOM = Path("totalsegmentator") / "example_ct_dicom"
"""The same study's DICOM series: 20 slices of 512×512 at 0.977 mm, 2 mm apart (JPEG 2000)."""


def _sample(name: str) -> Path:
    # one resolver for the CLI and the plugin: local data folder, else a checksummed download (pooch)
    from m2f_med.sample_data import sample_ct_path

    return sample_ct_path(name)


def sample_ct() -> list:
    """The sample CT as an Image layer (HU, soft-tissue window, 3 mm voxels).

    Returns:
        napari layer data tuples.

    Raises:
        VolumeError: the file fails its checksum or cannot be downloaded.
    """
    from napari_m2f_med._viewer import watch_viewer

    watch_viewer()
    return read_image_file(_sample("ct"), modality="CT")


def sample_ct_dicom() -> list:
    """The sample CT DICOM series as an Image layer (read like a folder opened from disk).

    Returns:
        napari layer data tuples.

    Raises:
        VolumeError: a file fails its checksum or cannot be downloaded.
    """
    from napari_m2f_med._viewer import watch_viewer

    watch_viewer()
    return read_dicom_folder(_sample("ct_dicom"))
