"""Readers: DICOM folders, SEG and RTSTRUCT on their series, NIfTI/NRRD label detection, world geometry in mm."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from napari_m2f_med._layers import layer_info
from napari_m2f_med._reader import get_reader, read_path
from napari_m2f_med._series_widget import SeriesWidget

PLUGIN = "m2f-med"


def _open(viewer, path):
    return viewer.open(str(path), plugin=PLUGIN)


def test_dicom_folder_world_coordinates_are_the_patient_positions(make_napari_viewer, data_dir):
    folder = data_dir / "dcmqi" / "ct-3slice"
    viewer = make_napari_viewer()
    (image,) = _open(viewer, folder)
    assert image.data.shape == (3, 512, 512)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm"))]
    # independent check with pydicom: every slice's first pixel sits at its ImagePositionPatient (LPS mm)
    for ds in headers:
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        k = int(np.argmin([abs(image.data_to_world((z, 0, 0))[0] - ipp[2]) for z in range(3)]))
        np.testing.assert_allclose(image.data_to_world((k, 0, 0)), ipp[::-1], atol=1e-3)
        # the pixels are the file's pixels, in HU, row j -> napari axis 1, column i -> napari axis 2
        hu = ds.RescaleSlope * pydicom.dcmread(ds.filename).pixel_array + ds.RescaleIntercept
        np.testing.assert_allclose(image.data[k], hu, atol=1e-3)
    spacing = float(headers[0].PixelSpacing[0])
    np.testing.assert_allclose(image.scale, [1.0, spacing, spacing], rtol=1e-6)
    assert str(image.units[0]) == "millimeter"
    assert layer_info(image).meta["modality"] == "CT"


def test_seg_opens_as_labels_on_its_series_found_beside_it(make_napari_viewer, data_dir):
    seg_path = data_dir / "dcmqi" / "seg_dicom" / "liver.dcm"
    viewer = make_napari_viewer()
    layers = _open(viewer, seg_path)
    assert [layer._type_string for layer in layers] == ["image", "labels"]
    image, labels = layers
    assert labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert "Liver" in list(labels.features["name"])
    frames = pydicom.dcmread(seg_path).pixel_array
    assert int((labels.data > 0).sum()) == int(frames.sum())
    # opened again with the image already in the viewer: only the labels are added, on that image
    again = _open(viewer, seg_path)
    assert [layer._type_string for layer in again] == ["labels"]
    assert layer_info(again[0]).reference is layer_info(image).volume


def test_rtstruct_opens_on_its_ct(make_napari_viewer, data_dir):
    rt = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001" / "CT" / "dicom" / "mask" / "RS.dcm"
    viewer = make_napari_viewer()
    image, labels = _open(viewer, rt)
    assert labels.data.shape == image.data.shape
    assert (labels.data > 0).sum() > 100
    assert any("gtv" in str(n).lower() for n in labels.features["name"])


def test_nifti_label_detection_and_shared_scale_for_anisotropic_voxels(make_napari_viewer, data_dir):
    base = data_dir / "ivadomed_msd_spleen_and_spinalcord" / "ct_scan"
    ct = base / "sub-spleen2" / "ct" / "sub-spleen2_ct.nii.gz"
    seg = base / "derivatives" / "labels" / "sub-spleen2" / "ct" / "sub-spleen2_ct_seg-manual.nii.gz"
    viewer = make_napari_viewer()
    (image,) = _open(viewer, ct)
    (labels,) = _open(viewer, seg)
    assert image._type_string == "image" and labels._type_string == "labels"
    assert len(set(np.round(image.scale, 3))) > 1  # anisotropic (0.795 x 0.795 x 5 mm)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.data.shape == image.data.shape
    # spleen on CT: its mean must be soft tissue (independent of how the grid was flipped for display)
    assert 20 < float(image.data[labels.data > 0].mean()) < 200
    # a new Labels layer made by napari over the image inherits its scale and placement
    viewer.layers.selection.active = image
    viewer._new_labels()
    painted = viewer.layers[-1]
    np.testing.assert_allclose(painted.scale, image.scale)
    np.testing.assert_allclose(painted.translate, image.translate)


def test_nrrd_image_and_label_pair(data_dir):
    image = read_path(str(data_dir / "pyradiomics" / "brain1_image.nrrd"))
    label = read_path(str(data_dir / "pyradiomics" / "brain1_label.nrrd"))
    assert image[0][2] == "image" and label[0][2] == "labels"
    np.testing.assert_allclose(image[0][1]["scale"], label[0][1]["scale"])


def test_reader_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path), str(tmp_path)]) is None


def test_bad_file_names_the_file(tmp_path):
    from m2f_med.io.errors import VolumeError

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"garbage")
    with pytest.raises(VolumeError, match="broken.nii.gz"):
        read_path(str(bad))


def test_series_widget_opens_another_series_of_the_folder(make_napari_viewer, data_dir):
    viewer = make_napari_viewer()
    (image,) = _open(viewer, data_dir / "dcmqi")
    others = layer_info(image).series
    assert len(others) >= 1
    widget = SeriesWidget(viewer)
    assert widget.series_combo.count() == len(others)
    added = widget.open_selected(others[0][0])
    assert len(added) == 1 and layer_info(added[0]).meta["SeriesInstanceUID"] == others[0][0]
