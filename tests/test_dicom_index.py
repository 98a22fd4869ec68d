"""Recursive DICOM discovery (``index_dicom_tree``) on generated trees and the real data folders."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import (
    ENHANCED_CT,
    STUDY,
    write_enhanced,
    write_non_image,
    write_rgb_secondary_capture,
    write_series,
    write_slice,
)
from pydicom.uid import generate_uid

from m2f_med.io.dicom_index import index_dicom_tree, plane_label, read_header
from m2f_med.io.errors import VolumeError


@pytest.fixture
def tree(tmp_path):
    """study A: CT (3 slices, nested, no extensions) + RTSTRUCT; study B: enhanced CT; plus junk files."""
    ct = write_series(tmp_path / "patient" / "study" / "ct" / "deep", [0.0, 2.0, 4.0], names=["1", "2", "3"],
                      SeriesDescription="abdomen")
    write_non_image(tmp_path / "patient" / "study" / "rtstruct" / "RS")
    write_enhanced(tmp_path / "other" / "enh.dcm", np.zeros((4, 3, 4), np.int16),
                   [(0, 0, float(z)) for z in range(4)], study_uid=generate_uid(), series_uid=generate_uid())
    (tmp_path / "README.md").write_text("# not DICOM\n")
    (tmp_path / "patient" / "image.nii.gz").write_bytes(b"\x1f\x8b" + bytes(300))
    (tmp_path / "patient" / "empty").write_bytes(b"")
    return tmp_path, ct


def test_finds_nested_series_and_skips_other_files(tree):
    root, ct_paths = tree
    idx = index_dicom_tree(root)
    assert len(idx.studies) == 2 and len(idx) == 3
    ct = next(s for s in idx if s.description == "abdomen")
    assert sorted(ct.paths) == sorted(ct_paths)
    assert (ct.modality, ct.orientation, ct.n_instances, ct.n_images) == ("CT", "AXIAL", 3, 3)
    assert (ct.rows, ct.columns, ct.multiframe) == (3, 4, False)
    assert ct.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert ct.image_orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert ct.sop_class_uids == ("1.2.840.10008.5.1.4.1.1.2",) and ct.study_uid == STUDY
    assert {p.name for p, _ in idx.skipped} == {"README.md", "image.nii.gz", "empty"}
    rt = next(s for s in idx if s.kinds == ("RTSTRUCT",))
    assert rt.n_images == 0 and rt.study_uid == STUDY


def test_enhanced_multiframe_orientation_from_functional_groups(tree):
    idx = index_dicom_tree(tree[0])
    enh = next(s for s in idx if s.multiframe)
    assert enh.sop_class_uids == (ENHANCED_CT,)
    assert (enh.n_instances, enh.n_images, enh.orientation) == (1, 4, "AXIAL")


def test_sop_class_only_in_file_meta(tmp_path):
    p = write_slice(tmp_path / "a", np.zeros((2, 2), np.int16), (0, 0, 0))
    import pydicom

    ds = pydicom.dcmread(p)
    ds.SOPClassUID = ""
    ds.SOPInstanceUID = ""
    ds.save_as(p)
    (s,) = index_dicom_tree(tmp_path).series
    assert s.sop_class_uids == ("1.2.840.10008.5.1.4.1.1.2",) and s.kinds == ("image",)
    assert s.instances[0].sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID


def test_missing_series_uid_gets_a_stable_stand_in(tmp_path):
    write_series(tmp_path, [0.0, 1.0], series_uid="", study_uid="")
    first, second = index_dicom_tree(tmp_path), index_dicom_tree(tmp_path)
    (s,) = first.series
    assert s.uid_missing and s.series_uid.startswith("2.25.") and len(s.series_uid) <= 64
    assert second.series[0].series_uid == s.series_uid
    assert first.series_of(s.paths[1]) is s


def test_colour_series_flagged(tmp_path):
    write_rgb_secondary_capture(tmp_path / "sc", series_uid=generate_uid())
    (s,) = index_dicom_tree(tmp_path).series
    assert s.is_color and s.kinds == ("secondary_capture",)


def test_nothing_dicom_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(VolumeError, match="no DICOM series found") as err:
        index_dicom_tree(tmp_path)
    assert "image files" not in str(err.value)
    (tmp_path / "ct.nii.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(VolumeError, match=r"image files such as ct\.nii\.gz: pass those files themselves"):
        index_dicom_tree(tmp_path)
    with pytest.raises(VolumeError, match="no such file"):
        index_dicom_tree(tmp_path / "missing")
    with pytest.raises(VolumeError, match="not a DICOM file"):
        read_header(tmp_path / "a.txt")


@pytest.mark.parametrize(
    ("iop", "label"),
    [
        ((1, 0, 0, 0, 1, 0), "AXIAL"),
        ((1, 0, 0, 0, 0, -1), "CORONAL"),
        ((0, 1, 0, 0, 0, -1), "SAGITTAL"),
        ((1, 0, 0, 0, 0.9483237, -0.3173047), "AXIAL"),  # 18.5 deg gantry tilt stays axial
        ((1, 0, 0, 0, np.cos(np.pi / 4), -np.sin(np.pi / 4)), "OBLIQUE"),
        (None, ""),
    ],
)
def test_plane_label(iop, label):
    assert plane_label(iop) == label


def test_real_tree_with_dicomdirs_and_several_patients(data_dir):
    idx = index_dicom_tree(data_dir / "dicom_edge_cases/pydicom_testfiles/dicomdirtests")
    assert len(idx.dicomdirs) == 8  # DICOMDIR variants are noted, not indexed as series
    assert len(idx.studies) >= 6
    tiny = [s for s in idx if s.n_instances == 50]
    assert len(tiny) == 1 and all(p.name.startswith("IM") for p in tiny[0].paths)  # files without extension
    assert not any("README" in p.name and "DICM" not in why for p, why in idx.skipped)


def test_real_totalsegmentator_series_without_uids(data_dir):
    idx = index_dicom_tree(data_dir / "totalsegmentator/example_ct_dicom")
    (s,) = idx.series
    assert s.uid_missing and s.n_instances == 20 and s.kinds == ("image",) and s.modality == "CT"
    assert s.sop_class_uids == ("1.2.840.10008.5.1.4.1.1.2",)  # from the file meta: the element is empty


def test_real_sarcoma_patient_series_and_rtstructs(data_dir):
    idx = index_dicom_tree(data_dir / "tcia/soft_tissue_sarcoma/STS_001")
    kinds = sorted((s.modality, s.kinds[0]) for s in idx)
    assert kinds == [("CT", "image"), ("MR", "image"), ("PT", "image")] + [("RTSTRUCT", "RTSTRUCT")] * 3
    assert "IBSI_1_STS_001_CT_image" in idx.describe()


def test_corrupt_dicom_is_skipped_by_the_index_and_named_by_the_loader(tmp_path):
    from m2f_med.io.dicom_series import load_dicom_series

    write_series(tmp_path, [0.0, 1.0])
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(40))
    idx = index_dicom_tree(tmp_path)
    assert len(idx) == 1 and [p.name for p, _ in idx.skipped] == ["broken.dcm"]
    with pytest.raises(VolumeError) as err:
        load_dicom_series([bad])
    assert err.value.path == str(bad)
