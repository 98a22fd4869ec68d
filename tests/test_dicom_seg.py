"""DICOM-SEG writing and reading: frame/instance correspondence, world positions, codes, overlaps, fractions."""

from __future__ import annotations

import glob
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch

from m2f_med.io.codes import ORGAN_CODES, normalise_label_name, segment_codes
from m2f_med.io.colors import label_rgb
from m2f_med.io.dicom_seg import SegmentInfo, read_dicom_seg, segment_infos, write_dicom_seg
from m2f_med.io.errors import VolumeError
from m2f_med.io.image_files import load_image_file
from m2f_med.io.loader import load_volume
from m2f_med.io.volume import make_volume


@pytest.fixture(scope="module")
def ct3(data_dir):
    """dcmqi's 3-slice CT (empty SpecificCharacterSet) and its liver label map (NRRD)."""
    ct = load_volume(data_dir / "dcmqi/ct-3slice")
    liver = load_image_file(data_dir / "dcmqi/seg_nrrd/liver_seg.nrrd", label=True)
    return ct, liver


def _world_voxels(vol) -> np.ndarray:
    """``(N, 4)`` world positions (RAS mm, rounded to 0.01) of the labelled voxels plus their label, sorted."""
    arr = vol.numpy()[0]
    idx = np.argwhere(arr > 0)
    world = (vol.affine.numpy() @ np.c_[idx, np.ones(len(idx))].T)[:3].T
    rows = np.c_[np.round(world, 2) + 0.0, arr[tuple(idx.T)]]
    return rows[np.lexsort(rows.T[::-1])]


def _check_frames_match_sources(seg_path, mask, source_paths):
    """Every SEG frame references the source instance at its own position and holds that slice's mask,
    read (rows, columns) from the (X, Y, Z) label map through the mask's affine (single-segment SEGs)."""
    seg = hd.seg.segread(seg_path)
    sources = {}
    for p in source_paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sources[tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 2))] = ds
    inv = np.linalg.inv(mask.affine.numpy())
    arr = mask.numpy()[0]
    pixels = seg.pixel_array if seg.NumberOfFrames > 1 else seg.pixel_array[None]
    assert seg.NumberOfFrames >= 1
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = tuple(np.round(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), 2))
        src = sources[ipp]
        ref_uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref_uid == src.SOPInstanceUID
        k = int(round((inv @ np.r_[-ipp[0], -ipp[1], ipp[2], 1.0])[2]))
        assert pixels[f].shape == (int(src.Rows), int(src.Columns))
        np.testing.assert_array_equal(pixels[f].astype(bool), (arr[:, :, k] > 0).T, err_msg=f"frame {f}")
    return seg


def test_seg_round_trip_on_ct_with_empty_character_set(tmp_path, ct3):
    ct, liver = ct3
    assert pydicom.dcmread(ct.meta["source_paths"][0]).SpecificCharacterSet == ""  # the hard case
    out = write_dicom_seg(liver, ct, tmp_path / "liver.dcm", labels={1: "liver"})
    seg = _check_frames_match_sources(out, liver, ct.meta["source_paths"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert "not for clinical use" in seg.SeriesDescription
    assert seg.Manufacturer == "m2f-med" and seg.ManufacturerModelName == "m2f-med" and seg.SoftwareVersions
    assert seg.SpecificCharacterSet == "ISO_IR 192" and seg.SeriesInstanceUID != ct.meta["SeriesInstanceUID"]
    assert seg.StudyInstanceUID == ct.meta["StudyInstanceUID"]
    assert seg.FrameOfReferenceUID == ct.meta["FrameOfReferenceUID"]
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(ct.meta["SOPInstanceUIDs"])
    desc = seg.get_segment_description(1)
    assert desc.SegmentLabel == "liver"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert desc.SegmentAlgorithmType == "AUTOMATIC"

    back, names = read_dicom_seg(out, ct)
    assert names == {1: "liver"}
    assert torch.equal(back.as_tensor().to(torch.int64), liver.as_tensor().to(torch.int64))
    own, _ = read_dicom_seg(out)  # the SEG's own grid: same voxels at the same world positions
    np.testing.assert_array_equal(_world_voxels(own), _world_voxels(liver))


def test_our_seg_agrees_with_dcmqi_seg_of_the_same_label(tmp_path, ct3, data_dir):
    ct, liver = ct3
    ours = write_dicom_seg(liver, ct, tmp_path / "ours.dcm", labels={"1": "liver"}, algorithm=None)  # JSON-style keys
    uids = ct.meta["SOPInstanceUIDs"]
    a = hd.seg.segread(ours).get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
    b = hd.seg.segread(data_dir / "dcmqi/seg_dicom/liver.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], ignore_spatial_locations=True  # dcmqi omits the flag
    )
    np.testing.assert_array_equal(a, b)
    desc = hd.seg.segread(ours).get_segment_description(1)
    assert desc.SegmentAlgorithmType == "MANUAL" and desc.SegmentLabel == "liver"


def test_reoriented_mask_gives_the_same_frames(tmp_path, ct3):
    """A label map flipped in x and z (as after Orientation to another code) is mapped back per source plane."""
    ct, liver = ct3
    arr = liver.numpy()[0]
    nx, _, nz = arr.shape
    flip = np.array([[-1, 0, 0, nx - 1], [0, 1, 0, 0], [0, 0, -1, nz - 1], [0, 0, 0, 1.0]])
    flipped = make_volume(arr[::-1, :, ::-1].copy(), liver.affine.numpy() @ flip)
    a = write_dicom_seg(liver, ct, tmp_path / "a.dcm")
    b = write_dicom_seg(flipped, ct, tmp_path / "b.dcm")
    uids = ct.meta["SOPInstanceUIDs"]
    pa = hd.seg.segread(a).get_pixels_by_source_instance(source_sop_instance_uids=uids)
    pb = hd.seg.segread(b).get_pixels_by_source_instance(source_sop_instance_uids=uids)
    np.testing.assert_array_equal(pa, pb)
    assert pa.sum() == int((arr > 0).sum())


def test_non_square_series_maps_rows_and_columns(tmp_path, data_dir):
    """STS CT is 198 columns x 202 rows: a transposition would not even fit."""
    base = data_dir / "tcia/soft_tissue_sarcoma/STS_001/CT"
    ct = load_volume(base / "dicom/image")
    gtv = load_image_file(base / "nifti/mask/mask.nii.gz", label=True)
    assert tuple(ct.shape[1:3]) == (198, 202)
    out = write_dicom_seg(gtv, ct, tmp_path / "gtv.dcm", labels={1: "GTV_Mass"})
    _check_frames_match_sources(out, gtv, ct.meta["source_paths"])
    back, _ = read_dicom_seg(out, ct)
    assert torch.equal(back.as_tensor().to(torch.int64), gtv.as_tensor().to(torch.int64))
    seg = hd.seg.segread(out)
    assert seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # GTV
    source_study_id = str(pydicom.dcmread(ct.meta["source_paths"][0], stop_before_pixels=True).StudyID)
    assert len(source_study_id) > 16 and seg.StudyID == source_study_id[:16]  # SH is 16 characters at most


def test_one_segment_per_label_present_with_codes_and_laterality(tmp_path, ct3):
    ct, liver = ct3
    arr = np.zeros(liver.shape[1:], np.int32)
    arr[100:150, 200:260, 0] = 7
    arr[300:320, 300:340, 1] = 2
    arr[10:20, 10:20, 2] = 9
    mask = make_volume(arr, liver.affine.numpy())
    out = write_dicom_seg(mask, ct, tmp_path / "multi.dcm", labels={2: "kidney_left", 7: "GTV-1", 9: "odd thing", 4: "absent"})
    seg = hd.seg.segread(out)
    assert seg.segment_numbers == [1, 2, 3]  # label values 2, 7, 9 in increasing order; 4 is absent
    d1, d2, d3 = (seg.get_segment_description(n) for n in (1, 2, 3))
    assert [d.SegmentLabel for d in (d1, d2, d3)] == ["kidney_left", "GTV-1", "odd thing"]
    t1 = d1.SegmentedPropertyTypeCodeSequence[0]
    assert t1.CodeValue == "64033007" and t1.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    assert d2.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert d3.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # generic "Tissue"
    # the label values survive in SegmentDescription, so reading gives back the ids of labels.json
    assert [d.SegmentDescription for d in (d1, d2, d3)] == ["label value 2", "label value 7", "label value 9"]
    back, names = read_dicom_seg(out, ct)
    assert names == {2: "kidney_left", 7: "GTV-1", 9: "odd thing"}
    np.testing.assert_array_equal(back.numpy()[0], arr)
    # RecommendedDisplayCIELabValue from the shared colour table, back to the same RGB within rounding
    infos = {i["label_value"]: i for i in back.meta["segments"]}
    for value, name in ((2, "kidney_left"), (7, "GTV-1"), (9, "odd thing")):
        assert np.abs(np.subtract(infos[value]["rgb"], label_rgb(value, name))).max() <= 1
        assert infos[value]["algorithm_type"] == "AUTOMATIC" and infos[value]["algorithm_name"] == "m2f-med"


def test_segment_infos_set_algorithm_type_colour_and_tracking(tmp_path, ct3):
    """Edited model labels are SEMIAUTOMATIC, labels the model never made are MANUAL; the model is named."""
    ct, liver = ct3
    arr = np.zeros(liver.shape[1:], np.uint8)
    arr[100:150, 200:260, 0] = 1
    arr[300:320, 300:340, 1] = 2
    arr[10:20, 10:20, 2] = 5
    infos = segment_infos({1: "liver", 2: "spleen", 5: "lesion"}, [1, 2, 5], algorithm="My model 1.0",
                          edited=[2], model_values=[1, 2])
    infos[5] = SegmentInfo(5, "lesion", (10, 200, 30), "MANUAL", tracking_id="lesion 1")
    out = write_dicom_seg(make_volume(arr, liver.affine.numpy()), ct, tmp_path / "s.dcm", segments=infos)
    seg = hd.seg.segread(out)
    d1, d2, d3 = (seg.get_segment_description(n) for n in (1, 2, 3))
    assert [d.SegmentAlgorithmType for d in (d1, d2, d3)] == ["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"]
    assert d2.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "My model 1.0"
    assert "SegmentationAlgorithmIdentificationSequence" not in d3
    assert d3.TrackingID == "lesion 1" and d3.TrackingUID
    back, names = read_dicom_seg(out, ct)
    assert names == {1: "liver", 2: "spleen", 5: "lesion"}
    got = {i["label_value"]: i for i in back.meta["segments"]}
    assert np.abs(np.subtract(got[5]["rgb"], (10, 200, 30))).max() <= 1
    assert got[5]["tracking_id"] == "lesion 1" and got[2]["algorithm_type"] == "SEMIAUTOMATIC"
    if shutil.which("dciodvfy"):  # dicom3tools' independent validator (installed by .ci/run)
        res = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
        assert "Error" not in res.stderr, res.stderr[-2000:]
    with pytest.raises(VolumeError, match="must name its algorithm"):
        write_dicom_seg(make_volume(arr, liver.affine.numpy()), ct, tmp_path / "t.dcm",
                        segments=[SegmentInfo(1, "liver", algorithm_type="SEMIAUTOMATIC")])


def test_empty_mask_is_a_clear_error_and_writes_nothing(tmp_path, ct3):
    ct, liver = ct3
    empty = make_volume(np.zeros(liver.shape[1:], np.uint8), liver.affine.numpy())
    with pytest.raises(VolumeError, match="mask is empty; nothing to encode"):
        write_dicom_seg(empty, ct, tmp_path / "empty.dcm")
    assert list(tmp_path.iterdir()) == []


def test_mask_off_the_series_grid_or_without_dicom_reference_is_refused(tmp_path, ct3):
    ct, liver = ct3
    shifted = liver.affine.numpy().copy()
    shifted[0, 3] += 0.4  # 0.4 mm: about half a pixel
    with pytest.raises(VolumeError, match="no source DICOM slice"):
        write_dicom_seg(make_volume(liver.numpy()[0], shifted), ct, tmp_path / "x.dcm")
    with pytest.raises(VolumeError, match="no DICOM source instances"):
        write_dicom_seg(liver, liver, tmp_path / "x.dcm")  # a NIfTI/NRRD reference has no instances
    with pytest.raises(VolumeError, match="negative"):
        write_dicom_seg(make_volume(-liver.numpy()[0].astype(np.int16), liver.affine.numpy()), ct, tmp_path / "x.dcm")
    assert list(tmp_path.iterdir()) == []


def test_resampled_slices_cannot_be_referenced(tmp_path, data_dir):
    """A real CT series with one slice taken out: the loader fills the gap with an interpolated slice (SOP UID
    None), which a SEG cannot reference; an original slice can."""
    src = data_dir / "tcia/crlm_liver_mets_ct_noseg/CRLM-CT-1004/ct_dicom"
    z = {p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in src.glob("*.dcm")}
    first7 = sorted(z, key=z.get)[:7]
    (tmp_path / "ct").mkdir()
    for p in first7[:3] + first7[4:]:
        shutil.copy(p, tmp_path / "ct" / p.name)
    ct = load_volume(tmp_path / "ct")
    assert ct.shape[-1] == 7 and any("interpolated" in p or "invented" in p for p in ct.meta["problems"])
    uids = ct.meta["SOPInstanceUIDs"]
    original = [k for k, u in enumerate(uids) if u is not None]
    made_up = next(k for k, u in enumerate(uids) if u is None)
    arr = np.zeros(ct.shape[1:], np.uint8)
    arr[4:9, 3:7, made_up] = 1
    with pytest.raises(VolumeError, match="labelled voxels lie on no source DICOM slice"):
        write_dicom_seg(make_volume(arr, ct.affine.numpy()), ct, tmp_path / "bad.dcm")
    arr[:] = 0
    arr[4:9, 3:7, original[-1]] = 1
    out = write_dicom_seg(make_volume(arr, ct.affine.numpy()), ct, tmp_path / "ok.dcm")
    seg = hd.seg.segread(out)
    assert seg.NumberOfFrames == 1
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == uids[original[-1]]


def test_dcmqi_partial_overlaps_highest_segment_wins(data_dir):
    path = data_dir / "dcmqi/seg_dicom/partial_overlaps.dcm"
    label, names = read_dicom_seg(path)
    assert list(names) == [1, 2, 3, 4, 5] and names[1] == "GREEN"
    stack = hd.seg.segread(path).get_volume(combine_segments=False).array.astype(bool)  # (z, rows, cols, seg)
    ours = label.numpy()[0].transpose(2, 1, 0)
    counts = stack.sum(-1)
    assert (counts > 1).any()
    highest = np.where(counts > 0, stack.shape[-1] - np.argmax(stack[..., ::-1], axis=-1), 0)
    np.testing.assert_array_equal(ours, highest)
    assert any(f"{int((counts > 1).sum())} voxels belong to several segments" in p for p in label.meta["problems"])


def test_dcmqi_liver_seg_on_its_ct_grid(ct3, data_dir):
    ct, liver = ct3
    label, names = read_dicom_seg(data_dir / "dcmqi/seg_dicom/liver.dcm", ct)
    assert names == {1: "Liver"}
    np.testing.assert_array_equal(label.numpy(), liver.numpy())
    assert label.meta["modality"] == "SEG" and label.meta["source_format"] == "dicom-seg"


@pytest.mark.parametrize(
    "name",
    ["seg_image_ct_binary", "seg_image_ct_binary_fractional", "seg_image_ct_true_fractional", "seg_image_ct_binary_overlap"],
)
def test_highdicom_seg_variants_on_their_ct_series(data_dir, name):
    """highdicom's SEGs of pydicom's CT2 series. CT2 holds one slice 202.5 mm away from the other three
    (162x their spacing), so the loader keeps the three (gap limit, ``dicom_stack.REFUSE_GAP_FACTOR``); the
    overlap SEG also has frames on the left-out slice, which fall outside that reference grid."""
    path = data_dir / f"dicom_edge_cases/highdicom_seg/{name}.dcm"
    ct = load_volume(data_dir / "dicom_edge_cases/pydicom_testfiles/dicomdirtests/77654033/CT2")
    assert ct.shape[-1] == 3 and any("kept the largest part (3 slices), left out 1: 17106" in p for p in ct.meta["problems"])
    kept_z = {round(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]), 2)
              for p in ct.meta["source_paths"]}
    label, names = read_dicom_seg(path, ct)
    own, _ = read_dicom_seg(path)
    assert tuple(label.shape) == tuple(ct.shape) and names[1] == "first segment"
    own_rows = _world_voxels(own)
    on_kept = np.isin(own_rows[:, 2], sorted(kept_z))
    assert on_kept.any() and (on_kept.all() or name.endswith("overlap"))
    np.testing.assert_array_equal(_world_voxels(label), own_rows[on_kept])
    left_out = [p for p in label.meta["problems"] if "outside the reference grid" in p]
    assert left_out == ([f"{int((~on_kept).sum())} labelled voxels of the SEG lie outside the reference grid and "
                         "were left out (a SEG of more slices than the reference holds, e.g. one side of a series "
                         "split at the gap limit)"] if name.endswith("overlap") else [])
    raw = hd.seg.segread(path).get_volume(combine_segments=False).array  # (z, rows, cols, segments)
    if "fractional" in name:
        assert any("thresholded at 0.5" in p for p in label.meta["problems"])
        assert int((label.numpy() > 0).sum()) == int((raw[..., 0] >= 0.5).sum())
    elif not name.endswith("overlap"):
        assert int((label.numpy() > 0).sum()) == int(raw.max(-1).astype(bool).sum())


def test_single_frame_seg_and_wrong_reference(data_dir, ct3):
    path = data_dir / "dicom_edge_cases/highdicom_seg/seg_image_ct_binary_single_frame.dcm"
    label, _ = read_dicom_seg(path)
    assert tuple(label.shape) == (1, 128, 128, 1) and label.numpy().any()
    ct, _ = ct3
    with pytest.raises(VolumeError, match="frame of reference"):
        read_dicom_seg(path, ct)
    with pytest.raises(VolumeError, match="not a DICOM Segmentation"):
        read_dicom_seg(sorted(glob.glob(str(data_dir / "dcmqi/ct-3slice/*.dcm")))[0])


def test_code_table_matches_pydicom_snomed_dictionary():
    from pydicom.sr._concepts_dict import concepts

    meanings = {}
    for entries in concepts["SCT"].values():
        for value, (meaning, _cids) in entries.items():
            meanings.setdefault(value, set()).add(meaning.lower())
    for name, sc in ORGAN_CODES.items():
        for code in (sc.category, sc.type, sc.modifier):
            if code is not None:
                assert code.scheme_designator == "SCT"
                assert code.meaning.lower() in meanings.get(code.value, set()), (name, code)


def test_label_names_map_to_codes():
    assert normalise_label_name(" Lung-Left ") == "lung_left"
    assert segment_codes("Lung-Left").modifier.value == "7771000"
    assert segment_codes("kidney_right").modifier.meaning == "Right"
    assert segment_codes("Spinal-Cord").type.value == "2748008"
    assert segment_codes("GTV-1").type.meaning == "Neoplasm" and segment_codes("tumour") is segment_codes("tumor")
    generic = segment_codes("vertebrae_L3_fragment_x")
    assert generic.generic and generic.type.value == "85756007" and generic.category.meaning == "Tissue"


def _copy_series(src_dir, dst_dir, **blank):
    """Copy a DICOM series, setting the given elements to empty strings (the file meta is kept)."""
    dst_dir.mkdir()
    for p in sorted(src_dir.iterdir()):
        ds = pydicom.dcmread(p)
        for keyword in blank:
            setattr(ds, keyword, "")
        ds.save_as(dst_dir / p.name)
    return dst_dir


def test_sop_uids_only_in_the_file_meta_are_referenced(tmp_path, ct3, data_dir):
    """Like the TotalSegmentator sample CT: SOPInstanceUID/SOPClassUID empty, values in the file meta."""
    _, liver = ct3
    series = _copy_series(data_dir / "dcmqi/ct-3slice", tmp_path / "ct", SOPInstanceUID=None, SOPClassUID=None)
    ct = load_volume(series)
    out = write_dicom_seg(liver, ct, tmp_path / "seg.dcm")
    metas = {str(pydicom.dcmread(p).file_meta.MediaStorageSOPInstanceUID) for p in series.iterdir()}
    seg = hd.seg.segread(out)
    refs = {item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for item in seg.PerFrameFunctionalGroupsSequence}
    assert refs and refs <= metas
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID != ""


def test_source_without_study_uid_is_a_clear_error(tmp_path, ct3, data_dir):
    _, liver = ct3
    series = _copy_series(data_dir / "dcmqi/ct-3slice", tmp_path / "ct", StudyInstanceUID=None)
    ct = load_volume(series)
    with pytest.raises(VolumeError, match="no StudyInstanceUID"):
        write_dicom_seg(liver, ct, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
