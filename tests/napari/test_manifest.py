"""The npe2 manifest: valid, installed under the distribution name, every command importable."""

from __future__ import annotations

from pathlib import Path

import napari_m2f_med
import pytest
from npe2 import PluginManifest


def test_manifest_is_valid_and_installed():
    installed = PluginManifest.from_distribution("m2f-med")
    installed.validate_imports()  # raises if a python_name does not resolve
    on_disk = PluginManifest.from_file(Path(napari_m2f_med.__file__).with_name("napari.yaml"))
    assert installed.name == on_disk.name == "m2f-med"
    contributions = installed.contributions
    assert {w.display_name for w in contributions.widgets} >= {"Segment", "Review"}
    assert {tuple(w.layer_types) for w in contributions.writers} == {("labels",)}
    exts = {e for w in contributions.writers for e in w.filename_extensions}
    assert {".nii.gz", ".dcm"} <= exts
    reader = contributions.readers[0]
    assert reader.accepts_directories and "*.nii.gz" in reader.filename_patterns
    assert contributions.sample_data


def test_sample_ct_from_the_data_folder(make_napari_viewer, data_dir):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample("m2f-med", "example_ct")
    assert layer.data.shape == (112, 101, 122)
    assert list(layer.scale) == pytest.approx([3.0, 3.0, 3.0])
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)  # soft-tissue window on HU
