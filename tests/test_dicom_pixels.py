"""Pixel decoding errors and value mapping (``m2f_med.io.dicom_pixels``)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_factory import write_encapsulated
from pydicom import uid

from m2f_med.io import dicom_pixels
from m2f_med.io.dicom_pixels import DECODER_PACKAGES, check_decoder, invert_monochrome1, rescale
from m2f_med.io.dicom_series import load_dicom_series
from m2f_med.io.errors import DecoderMissingError, VolumeError


def test_syntax_without_any_decoder_names_syntax_and_package(tmp_path):
    path = write_encapsulated(tmp_path / "mpeg.dcm", uid.MPEG2MPML)
    with pytest.raises(DecoderMissingError) as err:
        load_dicom_series([path])
    e = err.value
    assert isinstance(e, VolumeError) and e.path == str(path)
    assert "1.2.840.10008.1.2.4.100" in e.transfer_syntax and "MPEG2" in e.transfer_syntax
    assert "gdcm" in e.package
    assert "no decoder for transfer syntax" in str(e)


class _Unavailable:
    is_available = False
    missing_dependencies = ["pylibjpeg-openjpeg"]


def test_missing_plugin_names_the_package_to_install(tmp_path, monkeypatch):
    path = write_encapsulated(tmp_path / "j2k.dcm", uid.JPEG2000Lossless)
    monkeypatch.setattr(dicom_pixels, "get_decoder", lambda ts: _Unavailable())
    with pytest.raises(DecoderMissingError, match=r"JPEG 2000 .*install pylibjpeg pylibjpeg-openjpeg"):
        load_dicom_series([path])


def test_installed_decoders_pass_the_check(tmp_path):
    for ts in (uid.JPEG2000Lossless, uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.RLELossless, uid.ExplicitVRBigEndian):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        check_decoder(ds)  # raises if the venv lacks the plugin FACTS.md says we install


def test_every_compressed_syntax_with_a_pydicom_plugin_has_a_package_hint():
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

    compressed = [ts for ts in _PIXEL_DATA_DECODERS if uid.UID(ts).is_compressed and ts != uid.DeflatedExplicitVRLittleEndian]
    assert compressed and all(ts in DECODER_PACKAGES for ts in compressed)


def test_corrupt_codestream_is_a_volume_error(tmp_path):
    path = write_encapsulated(tmp_path / "bad_j2k.dcm", uid.JPEG2000Lossless)
    with pytest.raises(VolumeError, match="cannot decode pixel data") as err:
        load_dicom_series([path])
    assert not isinstance(err.value, DecoderMissingError)


def test_rescale_is_float32_and_leaves_input_alone():
    stored = np.array([0, 65535], np.uint16)
    out = rescale(stored, 1.0, -1024.0)
    assert out.dtype == np.float32 and out.tolist() == [-1024.0, 64511.0]
    assert stored.tolist() == [0, 65535]


def test_invert_monochrome1_ranges():
    assert invert_monochrome1(np.array([0, 4095], np.uint16), 12, signed=False).tolist() == [4095, 0]
    assert invert_monochrome1(np.array([-32768, 32767], np.int16), 16, signed=True).tolist() == [32767, -32768]
