"""Start-up stays light: the CLI and ``m2f_med.io`` import neither torch nor MONAI until a command needs them.

Checked through ``sys.modules`` in a fresh interpreter (not by timing): ``m2f-med --help`` / ``--version``
and ``inspect`` must not pay the seconds that ``import torch`` / ``import monai`` cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "transformers", "ignite", "sympy", "scipy", "SimpleITK")


def _fresh(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded(mods: dict) -> list[str]:
    return [m for m, present in mods.items() if present]


def test_importing_cli_and_io_loads_no_torch_or_monai():
    mods = _fresh(
        "import m2f_med, m2f_med.cli, m2f_med.io\n"
        "from m2f_med.io.errors import VolumeError\n"
        "from m2f_med.io import VolumeError, index_dicom_tree, select_series\n"
        "from m2f_med.cli import build_parser\n"
        "build_parser()\n"
    )
    assert _loaded(mods) == []


def test_help_and_version_load_no_torch():
    for flag in ("--help", "--version"):
        mods = _fresh(
            "import contextlib, io\nfrom m2f_med.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main([{flag!r}])\n    except SystemExit:\n        pass\n"
        )
        assert _loaded(mods) == [], flag


def test_inspect_dicom_folder_and_nifti_load_no_torch(data_dir):
    for path in (data_dir / "dcmqi", data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"):
        mods = _fresh(
            "import contextlib, io\nfrom m2f_med.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['inspect', {str(path)!r}]) == 0\n"
        )
        assert "torch" not in _loaded(mods) and "monai" not in _loaded(mods), path


def test_inspect_report_is_the_same_with_array_volumes(data_dir):
    """The torch-free ArrayVolume path describes a series exactly as the MetaTensor path does."""
    from m2f_med.cli.inspect_cmd import inspect_path
    from m2f_med.io.volume import array_volumes

    for path in (data_dir / "dcmqi", data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"):
        full = inspect_path(path)
        with array_volumes():
            light = inspect_path(path)
        assert light == full, path


def test_array_volumes_is_scoped():
    import numpy as np

    from m2f_med.io.volume import ArrayVolume, array_volumes, make_volume

    with array_volumes():
        v = make_volume(np.zeros((2, 3, 4), np.float32), np.eye(4))
    assert isinstance(v, ArrayVolume) and v.shape == (1, 2, 3, 4) and v.meta["spacing_mm"] == (1.0, 1.0, 1.0)
    w = make_volume(np.zeros((2, 3, 4), np.float32), np.eye(4))
    assert type(w).__name__ == "MetaTensor"
    with pytest.raises(ValueError, match="invertible"), array_volumes():
        make_volume(np.zeros((2, 3, 4), np.float32), np.zeros((4, 4)))


def test_cli_makes_waiting_openmp_threads_sleep_before_torch_loads():
    """OpenMP reads OMP_WAIT_POLICY when torch is imported: the CLI sets it (unless the user did) first."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    code = ("import contextlib, io, os, sys\nfrom m2f_med.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main(['--version'])\n"
            "    except SystemExit:\n        pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["ACTIVE", "False"]
