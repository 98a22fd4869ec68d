"""Fixtures for the napari plugin tests.

The plugin tests need napari (the ``napari`` extra) and, for anything that draws, a real X display:
pytest-xvfb starts Xvfb for the session (``QT_QPA_PLATFORM=offscreen`` has no GL context for napari's canvas).
"""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("napari_m2f_med")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/napari/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.napari)
