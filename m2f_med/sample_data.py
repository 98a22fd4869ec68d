"""Real sample CTs for the README's first job, the napari plugin and demos, with known SHA-256 checksums.

m2f-med ships no patient images. A sample is taken from the local data folder
(:func:`m2f_med.data.data_dir`: ``$M2F_MED_DATA``, else ``../shared/data`` beside the checkout) when it is
there, and otherwise downloaded once from its public source with ``pooch`` into the user cache
(``pooch.os_cache("m2f-med")``). Every file, local or downloaded, is checked against its SHA-256 so that a
truncated or substituted file is refused instead of segmented.

Samples (TotalSegmentator repository, ``tests/reference_files``, Apache-2.0; Wasserthal et al., Radiology:
Artificial Intelligence 2023):

* ``ct_dicom``: a contrast-enhanced abdominal CT, DICOM series of 20 slices 512×512 at 0.977 mm, 2 mm apart
  (JPEG 2000 lossless). It is the default model's held-out test scan (never trained on).
* ``ct``: a non-contrast thorax/abdomen CT, NIfTI 122×101×112 at 3 mm (the default model's training scan).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from m2f_med.data import DATA_ENV, data_dir
from m2f_med.io.errors import VolumeError

__all__ = ["SAMPLES", "SOURCE_URL", "Sample", "sample_ct_path", "DEFAULT_SAMPLE"]

SOURCE_URL = "https://raw.githubusercontent.com/wasserth/TotalSegmentator/master/tests/reference_files/"
"""Public source of the samples: the TotalSegmentator repository (Apache-2.0)."""

DEFAULT_SAMPLE = "ct_dicom"


@dataclass(frozen=True)
class Sample:
    """One sample: a file or a folder of files below the data folder / the source URL.

    Attributes:
        relative: path below the data folder and below :data:`SOURCE_URL` (POSIX form).
        sha256: ``{file name: sha256 hex}``; for a single file the key is ``""``.
        description: one line for users.
    """

    relative: str
    sha256: Mapping[str, str]
    description: str

    @property
    def is_folder(self) -> bool:
        """True for a DICOM series folder, false for a single file."""
        return "" not in self.sha256


_DICOM_PREFIX = "CT.1.3.12.2.1107.5.1.4.60064.300000221208081134280000165"
_DICOM_SHA256 = dict(zip(
    [f"{_DICOM_PREFIX}{n}" for n in range(73, 93)],
    """4c5633409fa4d3edf6871e5684e9e1b10325b4d0949997582f43b23a684d0dc4
9148f91127145497f4d6c6f0780f9452504cd7fe5088ec8f2bf2b21800c731ff
3edaccec892e0821440cbefe3d5465923bb5146c316cbaf58f578d962f120484
9b68685f0c5f9bfcfc2c397f4fadf431da288d7422ca72e7d9031d4e039418cd
c8d2c0dc05e414d47d3652c658d8fecc20c3cf7ce106c10d84ad033d39700bcc
0ee2c1d58e06cedd91483ca35c04da3c26fea0dbe88aaf1eaa950b57f38357d6
c76cf0818d4215b92883d109b8a0b62ae0a4d81637eed98738f9c62b6f49bb72
106e20514fd3ca66895e14dbfba96c01c1195e4ed890c035d4368dd71f3ee116
5804e6c4a50f4d5b20040ac82a1c6d79cba5f7267d71f10b0a1b49eda1bc13ff
bef219a16b22949224de4581a2d288863b2585d29556ac24021f03307378cb39
9de5a49e880417d5330fe299115fdb95831a98234216a31c5c0e9a0be9a6dcd3
fa00c8d81ec8aa0d0cfc4e05343782c3a75a4c60df8cccf9ff5db42ac454e61d
ebba0900b0f728db0c94c769db3e5ca38a0cd916386a727541eb3e56350770e5
f084ec95cfba25efb7cbe86e8b4966b051904037e8385f58fe398c5475693b89
20a9b88a30ea8a824ac65cb19c1ebf80964b41ff476497706ff2a286e5f27a25
2a515d3b60f3ff733aac1fc5414206c331e3ed2ccef8c2e0c30b844c538e3ed8
5880669f1bc36b09cad4bdf487992ec415da0afa014e927efc282e612f467574
7af4dd5b5766a87368939116b91f90d989820e7b2237fb9bcd10d47db0960875
671306f4462ae881976c18c6a2d8a1567279fb0166ef0e9e8a41271fac9c1cbb
fdb76ad5272f074e07cc81509604fd163f2f8a9903d34b16ba6f078250373c51""".split(),
))

SAMPLES: dict[str, Sample] = {
    "ct_dicom": Sample(
        "totalsegmentator/example_ct_dicom", _DICOM_SHA256,
        "contrast-enhanced abdominal CT, DICOM series, 20 slices 512x512 @ 0.977 mm, 2 mm apart (held out)",
    ),
    "ct": Sample(
        "totalsegmentator/example_ct.nii.gz",
        {"": "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"},
        "non-contrast thorax/abdomen CT, NIfTI 122x101x112 @ 3 mm (training scan of the default model)",
    ),
}
"""The known samples by name."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(sample: Sample, root: Path) -> list[tuple[Path, str, str]]:
    """``(local path, url, sha256)`` of every file of ``sample`` below ``root``."""
    base = root / sample.relative
    url = SOURCE_URL + sample.relative
    if not sample.is_folder:
        return [(base, url, sample.sha256[""])]
    return [(base / name, f"{url}/{name}", digest) for name, digest in sorted(sample.sha256.items())]


def _check(path: Path, digest: str) -> None:
    actual = _sha256(path)
    if actual != digest:
        raise VolumeError(path, f"sha256 {actual} does not match the known {digest}: corrupt or different file")


def sample_ct_path(
    name: str = DEFAULT_SAMPLE,
    download: bool = True,
    cache_dir: str | Path | None = None,
    downloader: Callable | None = None,
) -> Path:
    """Path of a sample CT (a NIfTI file or a DICOM series folder), local or downloaded once, checksummed.

    Args:
        name: a key of :data:`SAMPLES` (``"ct_dicom"``, ``"ct"``).
        download: fetch from :data:`SOURCE_URL` with ``pooch`` when the local data folder lacks the sample.
        cache_dir: download folder; ``None`` = ``pooch.os_cache("m2f-med")``.
        downloader: a ``pooch`` downloader (for tests and proxies); ``None`` = pooch's HTTP downloader.

    Returns:
        The file (``ct``) or the series folder (``ct_dicom``).

    Raises:
        KeyError: unknown sample name.
        VolumeError: a file's SHA-256 differs from the known one (names the file), or the download failed.
        FileNotFoundError: the sample is not in the local data folder and ``download`` is false.
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {sorted(SAMPLES)}")
    sample = SAMPLES[name]
    local = data_dir()
    if local is not None and (local / sample.relative).exists():
        for path, _, digest in _files(sample, local):
            if not path.is_file():
                raise VolumeError(path, "sample file missing from the local data folder")
            _check(path, digest)
        return local / sample.relative
    if not download:
        raise FileNotFoundError(
            f"sample {name!r} ({sample.relative}) not in the local data folder; set {DATA_ENV} or allow download"
        )
    import pooch

    root = Path(cache_dir) if cache_dir is not None else Path(pooch.os_cache("m2f-med"))
    for path, url, digest in _files(sample, root):
        try:
            pooch.retrieve(url, known_hash=f"sha256:{digest}", fname=path.name, path=path.parent,
                           downloader=downloader, progressbar=False)
        except ValueError as err:  # pooch: hash mismatch after download
            raise VolumeError(path, f"download from {url} failed its checksum: {err}") from err
        except OSError as err:  # no network, HTTP errors (requests' exceptions are OSErrors)
            raise VolumeError(path, f"download from {url} failed: {err}") from err
    return root / sample.relative
