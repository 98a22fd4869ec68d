"""Property: the order files are written in and their names never change the loaded volume."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import numpy as np
from dicom_factory import ramp_slices, write_slice
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from m2f_med.io.dicom_series import load_dicom_series

N = 6
Z = [-7.5, -5.0, -2.5, 0.0, 2.5, 5.0]
UIDS = [generate_uid() for _ in range(N)]
TILT_Y = 0.35  # mm of y per mm of z: a tilted stack, so in-plane positions matter too


def _write(folder: Path, order: list[int], names: list[str]) -> None:
    pixels = ramp_slices(N, rows=3, cols=5)
    for slot, k in enumerate(order):
        write_slice(folder / names[slot], pixels[k], (1.0, 2.0 + TILT_Y * Z[k], Z[k]), sop_uid=UIDS[k],
                    instance_number=int(np.random.default_rng(slot).integers(1, 99)))


def _reference():
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), list(range(N)), [f"{k}.dcm" for k in range(N)])
        vol = load_dicom_series(d)
        return vol[0].numpy().copy(), vol.affine.numpy().copy(), list(vol.meta["SOPInstanceUIDs"])


REFERENCE = _reference()

names = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=12).filter(
        lambda s: s not in (".", "..")
    ),
    min_size=N, max_size=N, unique_by=str.lower,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(N)), file_names=names, as_folder=st.booleans())
def test_any_order_and_names_give_the_same_volume(order, file_names, as_folder):
    data, affine, uids = REFERENCE
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), list(order), file_names)
        paths = [Path(d) / n for n in file_names]
        vol = load_dicom_series(d if as_folder else paths)
        np.testing.assert_array_equal(vol[0].numpy(), data)
        np.testing.assert_allclose(vol.affine.numpy(), affine, atol=1e-9)
        assert vol.meta["SOPInstanceUIDs"] == uids
        assert [Path(p).name for p in vol.meta["source_paths"]] == [file_names[list(order).index(k)] for k in range(N)]
