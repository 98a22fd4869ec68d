"""Shared pytest fixtures.

``data_dir``: the real-data folder (``$M2F_MED_DATA`` or ``../shared/data``). Without it a test that needs
real data is skipped on a user's machine but fails under CI (``CI=true``), so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest
import torch

from m2f_med.data import data_dir as _data_dir

# Two cores: keep intra-op threads predictable and avoid oversubscription across xdist-free runs.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_dir():
    d = _data_dir()
    if d is None:
        msg = "real data folder missing (set M2F_MED_DATA or place it at ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return d
