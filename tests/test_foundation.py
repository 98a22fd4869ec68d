"""The package skeleton: the volume constructor, atomic writes, the CLI frame."""

from __future__ import annotations

import numpy as np
import pytest

from m2f_med.cli import main
from m2f_med.io.atomic import atomic_write
from m2f_med.io.volume import lps_to_ras_affine, make_volume, orientation_code


def test_make_volume_sets_geometry():
    aff = np.array([[-0.5, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    vol = make_volume(np.zeros((4, 5, 6), np.int16), aff, modality="CT")
    assert tuple(vol.shape) == (1, 4, 5, 6)
    np.testing.assert_allclose(vol.affine.numpy(), aff)
    assert vol.meta["spacing_mm"] == pytest.approx((0.5, 0.7, 3.0))
    assert vol.meta["problems"] == [] and vol.meta["modality"] == "CT"
    assert orientation_code(aff) == "LPS"
    np.testing.assert_allclose(lps_to_ras_affine(lps_to_ras_affine(aff)), aff)


def test_make_volume_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C, X, Y, Z"):
        make_volume(np.zeros((4, 5)), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        make_volume(np.zeros((4, 5, 6)), np.zeros((4, 4)))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_write(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "m2f-med" in capsys.readouterr().out
