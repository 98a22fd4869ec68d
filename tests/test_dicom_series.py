"""``load_dicom_series`` on small generated series: one test per edge case, each checking the exact value
or the clear error. Real-data checks are in ``test_dicom_real_data.py``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import (
    SEG,
    ramp_slices,
    write_enhanced,
    write_non_image,
    write_rgb_secondary_capture,
    write_series,
    write_slice,
)
from pydicom.uid import generate_uid

from m2f_med.io.dicom_series import FRAME_NUMBERS, load_dicom_series
from m2f_med.io.errors import VolumeError
from m2f_med.io.series_selection import AmbiguousSeriesError
from m2f_med.io.volume import LPS_TO_RAS, orientation_code


def lps(vol) -> np.ndarray:
    return LPS_TO_RAS @ vol.affine.numpy()


def test_slices_ordered_by_position_not_instance_number_or_name(tmp_path):
    z = [4.0, -2.0, 10.0, 1.0, 7.0]  # written in this (scrambled) order, InstanceNumber reversed
    names = ["b", "e.dcm", "a", "d.DCM", "c"]
    write_series(tmp_path, z, names=names)
    vol = load_dicom_series(tmp_path)
    order = np.argsort(z)
    raw = ramp_slices(len(z))
    np.testing.assert_array_equal(vol[0].numpy(), (raw[order].transpose(2, 1, 0) - 1024.0).astype(np.float32))
    assert vol.dtype.is_floating_point and vol.shape == (1, 4, 3, 5)
    a = lps(vol)
    np.testing.assert_allclose(a[:3, 3], [10.0, 20.0, -2.0])
    np.testing.assert_allclose(a[:3, 2], [0.0, 0.0, 3.0])
    assert orientation_code(vol.affine.numpy()) == "LPS"
    assert vol.meta["problems"] == []
    assert [p.split("/")[-1] for p in vol.meta["source_paths"]] == [names[k] for k in order]


def test_meta_follows_the_volume_contract(tmp_path):
    uids = [generate_uid() for _ in range(3)]
    write_series(tmp_path, [0.0, 2.5, 5.0], sop_uids=uids)
    vol = load_dicom_series(sorted(tmp_path.iterdir()))
    m = vol.meta
    assert m["modality"] == "CT" and m["source_format"] == "dicom" and m["space"] == "RAS"
    assert m["SOPInstanceUIDs"] == uids and m[FRAME_NUMBERS] == [None, None, None]
    assert m["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert m["StudyInstanceUID"] and m["SeriesInstanceUID"] and m["FrameOfReferenceUID"]
    assert m["spacing_mm"] == pytest.approx((0.9, 0.7, 2.5))
    assert m["filename_or_obj"] == str(tmp_path)


def test_non_square_pixels_keep_row_and_column_spacing_apart(tmp_path):
    # PixelSpacing = (row spacing 0.5, column spacing 0.8): X (along a row) steps 0.8 mm, Y steps 0.5 mm.
    write_series(tmp_path, [0.0, 1.0], pixel_spacing=(0.5, 0.8))
    vol = load_dicom_series(tmp_path)
    a = lps(vol)
    np.testing.assert_allclose(a[:3, 0], [0.8, 0.0, 0.0])
    np.testing.assert_allclose(a[:3, 1], [0.0, 0.5, 0.0])
    raw = ramp_slices(2)
    # voxel (i, j, k) is stored pixel [row j, column i] of slice k
    assert vol[0, 3, 1, 1].item() == raw[1, 1, 3] - 1024


def test_oblique_orientation_axes_follow_the_cosines(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    iop = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated about z
    normal = np.cross(iop[:3], iop[3:])
    for k in range(3):
        pos = np.array([5.0, 6.0, 7.0]) + 2.0 * k * normal
        write_slice(tmp_path / f"s{k}", ramp_slices(3)[k], pos, orientation=iop, pixel_spacing=(1.5, 0.5))
    a = lps(load_dicom_series(tmp_path))
    np.testing.assert_allclose(a[:3, 0], 0.5 * np.array(iop[:3]), atol=1e-9)
    np.testing.assert_allclose(a[:3, 1], 1.5 * np.array(iop[3:]), atol=1e-9)
    np.testing.assert_allclose(a[:3, 2], 2.0 * normal, atol=1e-9)


def test_localizer_with_other_orientation_is_excluded(tmp_path):
    write_series(tmp_path, [0.0, 2.0, 4.0])
    write_slice(
        tmp_path / "scout", np.zeros((3, 4), np.int16), (0, 0, 0), orientation=(1, 0, 0, 0, 0, -1),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    write_slice(tmp_path / "scout2", np.zeros((3, 4), np.int16), (0, 0, 0), orientation=(0, 1, 0, 0, 0, -1))
    vol = load_dicom_series(tmp_path)
    assert vol.shape[-1] == 3
    problems = " | ".join(vol.meta["problems"])
    assert "localizer" in problems and "scout" in problems
    assert "another orientation" in problems  # the un-flagged sagittal image


def test_rgb_secondary_capture_and_non_image_objects_are_excluded(tmp_path):
    write_series(tmp_path, [0.0, 2.0])
    write_rgb_secondary_capture(tmp_path / "screenshot", position=(10.0, 20.0, 1.0), shape=(3, 4))
    write_non_image(tmp_path / "rtstruct")
    write_non_image(tmp_path / "seg", sop_class=SEG, modality="SEG")
    vol = load_dicom_series(sorted(tmp_path.iterdir()))
    assert vol.shape[-1] == 2
    problems = " | ".join(vol.meta["problems"])
    assert "colour (RGB) secondary capture" in problems
    assert "RTSTRUCT" in problems and "SEG" in problems


def test_identical_duplicate_is_dropped_with_a_note(tmp_path):
    paths = write_series(tmp_path, [0.0, 2.0, 4.0])
    (tmp_path / "copy_of_middle").write_bytes(paths[1].read_bytes())
    vol = load_dicom_series(tmp_path)
    assert vol.shape[-1] == 3
    assert any("dropped 1 duplicate" in p for p in vol.meta["problems"])


def test_conflicting_duplicate_is_an_error(tmp_path):
    write_series(tmp_path, [0.0, 2.0, 4.0])
    write_slice(tmp_path / "other", np.full((3, 4), 7, np.int16), (10.0, 20.0, 2.0))
    with pytest.raises(VolumeError, match="same position") as err:
        load_dicom_series(tmp_path)
    assert str(tmp_path) in str(err.value) and "other" in str(err.value)


def test_two_images_at_every_position_is_reported_as_several_volumes(tmp_path):
    write_series(tmp_path / "a", [0.0, 2.0, 4.0])
    write_series(tmp_path / "b", [0.0, 2.0, 4.0], pixels=ramp_slices(3) + 1)
    files = sorted((tmp_path / "a").iterdir()) + sorted((tmp_path / "b").iterdir())
    with pytest.raises(VolumeError, match="holds 2 volumes"):
        load_dicom_series(files)


def test_missing_slice_is_resampled_or_refused(tmp_path):
    z = [0.0, 2.0, 4.0, 8.0, 10.0]  # the slice at 6 mm is missing
    write_series(tmp_path, z)
    with pytest.raises(VolumeError, match="not uniform.*2 mm.*4 mm"):
        load_dicom_series(tmp_path, on_nonuniform="error")
    vol = load_dicom_series(tmp_path)
    assert vol.shape[-1] == 6
    np.testing.assert_allclose(lps(vol)[:3, 2], [0, 0, 2.0])
    raw = ramp_slices(5).astype(np.float32) - 1024
    data = vol[0].numpy()
    np.testing.assert_array_equal(data[..., 2], raw[2].T)
    np.testing.assert_allclose(data[..., 3], 0.5 * (raw[2] + raw[3]).T)  # 6 mm: halfway between 4 and 8 mm
    np.testing.assert_array_equal(data[..., 4], raw[3].T)
    uids = vol.meta["SOPInstanceUIDs"]
    assert uids[3] is None and all(u is not None for k, u in enumerate(uids) if k != 3)
    assert any("resampled" in p and "1 interpolated" in p for p in vol.meta["problems"])


def test_gap_too_wide_to_interpolate_safely_is_flagged(tmp_path):
    write_series(tmp_path, [0.0, 2.0, 4.0, 6.0, 16.0])  # 10 mm gap = four slices missing in a row
    vol = load_dicom_series(tmp_path)
    assert vol.shape[-1] == 9
    assert any(p.startswith("WARNING: a gap of 10.0 mm is 5x the usual 2.00 mm") for p in vol.meta["problems"])
    write_series(tmp_path / "one_missing", [0.0, 2.0, 4.0, 8.0])
    assert not any("WARNING" in p for p in load_dicom_series(tmp_path / "one_missing").meta["problems"])


def test_nonuniform_spacing_resampled_onto_median_gap_grid(tmp_path):
    z = [0.0, 2.0, 4.0, 6.0, 9.0, 12.0, 15.0]  # gaps 2, 2, 2, 3, 3, 3 -> median 2.5
    write_series(tmp_path, z, pixels=np.repeat(np.arange(7, dtype=np.int16)[:, None, None] * 10, 12, 1).reshape(7, 3, 4))
    vol = load_dicom_series(tmp_path)
    n_out = round(15.0 / 2.5) + 1
    assert vol.shape[-1] == n_out
    step = lps(vol)[2, 2]
    assert step == pytest.approx(15.0 / (n_out - 1))
    # every output slice holds the value linearly interpolated in position between its neighbours
    expected = np.interp(np.arange(n_out) * step, z, np.arange(7) * 10.0) - 1024
    np.testing.assert_allclose(vol[0, 0, 0].numpy(), expected, atol=1e-4)
    with pytest.raises(VolumeError, match="not uniform"):
        load_dicom_series(tmp_path, on_nonuniform="error")


def test_on_nonuniform_rejects_unknown_mode(tmp_path):
    write_series(tmp_path, [0.0, 1.0])
    with pytest.raises(ValueError, match="on_nonuniform"):
        load_dicom_series(tmp_path, on_nonuniform="guess")


@pytest.mark.parametrize(
    ("attrs", "spacing", "noted"),
    [
        ({"SliceThickness": 2.5, "SpacingBetweenSlices": 4.0}, 2.5, False),
        ({"SpacingBetweenSlices": 3.0}, 3.0, False),
        ({}, 1.0, True),
    ],
)
def test_single_slice_spacing(tmp_path, attrs, spacing, noted):
    write_series(tmp_path, [5.0], **attrs)
    vol = load_dicom_series(tmp_path)
    assert vol.shape == (1, 4, 3, 1)
    np.testing.assert_allclose(lps(vol)[:3, 2], [0, 0, spacing])
    assert any("1 mm slice spacing assumed" in p for p in vol.meta["problems"]) == noted


def test_gantry_tilt_keeps_every_slice_at_its_true_position(tmp_path):
    tilt = np.deg2rad(20.0)
    for k in range(4):
        # slices stay axial, but each is shifted in y by tan(tilt) per mm of z (a tilted gantry)
        pos = (10.0, 20.0 + 3.0 * k * np.tan(tilt), 3.0 * k)
        write_slice(tmp_path / f"s{k}", ramp_slices(4)[k], pos)
    vol = load_dicom_series(tmp_path)
    a = lps(vol)
    for k in range(4):
        np.testing.assert_allclose(a @ [0, 0, k, 1], [10.0, 20.0 + 3.0 * k * np.tan(tilt), 3.0 * k, 1], atol=1e-9)
    assert any("gantry tilt 20.00 deg" in p for p in vol.meta["problems"])
    assert abs(a[1, 2]) > 1.0  # sheared: the orthogonal reading would put slice 3 3.3 mm off


def test_slices_off_one_line_are_refused(tmp_path):
    for k, dy in enumerate([0.0, 5.0, 0.0, 5.0]):  # zig-zag: not one stack
        write_slice(tmp_path / f"s{k}", ramp_slices(4)[k], (10.0, 20.0 + dy, 2.0 * k))
    with pytest.raises(VolumeError, match="not stacked along one straight line"):
        load_dicom_series(tmp_path)


def test_two_equal_stacks_are_refused(tmp_path):
    write_series(tmp_path, [0.0, 2.0])
    for k in range(2):
        write_slice(tmp_path / f"sag{k}", ramp_slices(2)[k], (float(k), 0, 0), orientation=(0, 1, 0, 0, 0, -1))
    with pytest.raises(VolumeError, match="2 stacks"):
        load_dicom_series(tmp_path)


def test_uint16_with_negative_intercept_does_not_wrap(tmp_path):
    px = np.array([[0, 1, 65534, 65535]], np.uint16)
    write_series(tmp_path, [0.0], pixels=px[None], slope=1.0, intercept=-1024.0)
    v = load_dicom_series(tmp_path)[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(v, [-1024.0, -1023.0, 64510.0, 64511.0])


def test_int16_extremes_rescale_exactly(tmp_path):
    px = np.array([[-32768, -1, 0, 32767]], np.int16)
    write_series(tmp_path, [0.0], pixels=px[None], slope=2.0, intercept=-1024.0)
    v = load_dicom_series(tmp_path)[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(v, [-66560.0, -1026.0, -1024.0, 64510.0])


def test_fractional_slope_in_float(tmp_path):
    px = np.array([[3, 1000, 4095, 0]], np.uint16)
    write_series(tmp_path, [0.0], pixels=px[None], slope=0.25, intercept=-0.5)
    v = load_dicom_series(tmp_path)[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(v, [0.25, 249.5, 1023.25, -0.5])


def test_monochrome1_is_inverted(tmp_path):
    px = np.array([[0, 100, 4000, 4095]], np.uint16)  # 12 bits stored: 4095 displays black
    write_series(tmp_path, [0.0], pixels=px[None], photometric="MONOCHROME1", bits_stored=12, slope=1.0, intercept=0.0)
    v = load_dicom_series(tmp_path)[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(v, [4095.0, 3995.0, 95.0, 0.0])


def test_monochrome1_signed_is_inverted_within_range(tmp_path):
    px = np.array([[-2048, -1, 0, 2047]], np.int16)  # 12 bits stored, signed
    write_series(tmp_path, [0.0], pixels=px[None], photometric="MONOCHROME1", bits_stored=12, slope=1.0, intercept=0.0)
    v = load_dicom_series(tmp_path)[0, :, 0, 0].numpy()
    np.testing.assert_array_equal(v, [2047.0, 0.0, -1.0, -2048.0])


def test_enhanced_multiframe_frames_sorted_by_functional_group_position(tmp_path):
    frames = ramp_slices(3)
    positions = [(0, 0, 6.0), (0, 0, 0.0), (0, 0, 3.0)]  # stored out of order
    write_enhanced(tmp_path / "enh", frames, positions, slopes=[1.0, 2.0, 1.0], intercepts=[0.0, -10.0, 5.0])
    vol = load_dicom_series(tmp_path / "enh")
    data = vol[0].numpy()
    np.testing.assert_array_equal(data[..., 0], (2.0 * frames[1] - 10.0).T)
    np.testing.assert_array_equal(data[..., 1], (frames[2] + 5.0).T)
    np.testing.assert_array_equal(data[..., 2], frames[0].T.astype(np.float32))
    np.testing.assert_allclose(lps(vol)[:3, 2], [0, 0, 3.0])
    np.testing.assert_allclose(lps(vol)[:3, 0], [0.9, 0, 0])
    assert vol.meta[FRAME_NUMBERS] == [2, 3, 1]
    assert len(set(vol.meta["SOPInstanceUIDs"])) == 1


def test_enhanced_multiframe_with_two_time_points_loads_the_first(tmp_path):
    frames = ramp_slices(4)
    positions = [(0, 0, 0.0), (0, 0, 2.0), (0, 0, 0.0), (0, 0, 2.0)]
    dims = [(1, 1, 2), (1, 2, 2), (1, 1, 1), (1, 2, 1)]  # StackID, InStackPositionNumber, TemporalPositionIndex
    write_enhanced(tmp_path / "enh", frames, positions, dimension_values=dims)
    vol = load_dicom_series(tmp_path / "enh")
    assert vol.shape[-1] == 2
    np.testing.assert_array_equal(vol[0, ..., 0].numpy(), frames[2].T.astype(np.float32))
    assert any("2 frame groups" in p for p in vol.meta["problems"])


def test_enhanced_multiframe_with_a_single_dimension_index_loads(tmp_path):
    import pydicom

    frames = ramp_slices(3)
    positions = [(0, 0, 4.0), (0, 0, 0.0), (0, 0, 2.0)]
    write_enhanced(tmp_path / "one", frames, positions, dimension_values=[(3,), (1,), (2,)],
                   dimension_keywords=("InStackPositionNumber",))
    fc = pydicom.dcmread(tmp_path / "one").PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert isinstance(fc.DimensionIndexValues, int)  # the layout that gave "'int' object is not iterable"
    vol = load_dicom_series(tmp_path / "one")
    assert vol.shape[-1] == 3
    np.testing.assert_array_equal(vol[0, ..., 0].numpy(), frames[1].T.astype(np.float32))
    # a single temporal dimension separates the two time points
    write_enhanced(tmp_path / "time", ramp_slices(4), [(0, 0, 0.0), (0, 0, 2.0)] * 2,
                   dimension_values=[(1,), (1,), (2,), (2,)], dimension_keywords=("TemporalPositionIndex",))
    vol = load_dicom_series(tmp_path / "time")
    assert vol.shape[-1] == 2 and any("2 frame groups" in p for p in vol.meta["problems"])


def test_enhanced_multiframe_with_broken_functional_groups_is_a_clear_error(tmp_path):
    import pydicom

    path = write_enhanced(tmp_path / "enh", ramp_slices(2), [(0, 0, 0.0), (0, 0, 2.0)])
    ds = pydicom.dcmread(path)
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag("ImagePositionPatient")  # written raw: pydicom refuses to set an invalid DS
    ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]._dict[tag] = RawDataElement(
        tag, "DS", 6, b"1\\x\\2 ", 0, False, True)
    ds.save_as(path)
    with pytest.raises(VolumeError) as err:
        load_dicom_series(tmp_path / "enh")
    assert "enh" in str(err.value) and "\n" not in str(err.value)


def test_overlong_values_are_one_problem_line_not_console_warnings(tmp_path, caplog):
    import logging
    import warnings

    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    paths = write_series(tmp_path / "s", [0.0, 2.0, 4.0])
    tag = Tag("StationName")  # SH: at most 16 characters; written raw as real exports do
    for p in paths[1:]:
        ds = pydicom.dcmread(p)
        ds._dict[tag] = RawDataElement(tag, "SH", 18, b"STATION-NAME-18CHR", 0, False, True)
        ds.save_as(p)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as recwarn:
        vol = load_dicom_series(tmp_path / "s")
        assert pydicom.dcmread(paths[1]).StationName == "STATION-NAME-18CHR"  # read in full, and quietly
    lines = [p for p in vol.meta["problems"] if "longer than their VR allows" in p]
    assert lines == [f"2 values longer than their VR allows (kept in full): StationName (SH, > 16) x2; first in "
                     f"{paths[1].name}"]
    assert "exceeds the maximum length" not in caplog.text
    assert not [w for w in recwarn if "exceeds the maximum length" in str(w.message)]


def test_folder_with_two_image_series_asks_which(tmp_path):
    write_series(tmp_path / "one", [0.0, 2.0])
    write_series(tmp_path / "two", [0.0, 2.0, 4.0], series_uid=generate_uid())
    with pytest.raises(AmbiguousSeriesError) as err:
        load_dicom_series(tmp_path)
    assert len(err.value.candidates) == 2 and isinstance(err.value, VolumeError)
    assert "--series UID" in str(err.value)


def test_non_dicom_file_given_explicitly_is_named(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(VolumeError, match="not a DICOM file") as err:
        load_dicom_series([bad])
    assert err.value.path == str(bad)


def test_only_non_image_objects_is_a_clear_error(tmp_path):
    write_non_image(tmp_path / "rs.dcm")
    with pytest.raises(VolumeError, match="no image slices to stack.*RTSTRUCT"):
        load_dicom_series([tmp_path / "rs.dcm"])


def test_inputs_are_not_modified(tmp_path):
    paths = write_series(tmp_path, [0.0, 2.0, 6.0], photometric="MONOCHROME1", bits_stored=12)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    load_dicom_series(tmp_path)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths} == before


def test_patient_name_and_id_never_reach_logs_or_meta(tmp_path, caplog):
    write_series(tmp_path, [0.0, 2.0], patient_name="Doe^Johnathan", patient_id="SECRET-4711")
    write_slice(tmp_path / "x", np.zeros((3, 4), np.int16), (0, 0, 0), orientation=(0, 1, 0, 0, 0, -1),
                image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), patient_name="Doe^Johnathan",
                patient_id="SECRET-4711")
    caplog.set_level("DEBUG", logger="m2f_med")
    vol = load_dicom_series(tmp_path)
    text = caplog.text + repr({k: v for k, v in vol.meta.items() if k != "affine"})
    assert "Johnathan" not in text and "SECRET-4711" not in text
    assert "loaded DICOM series" in caplog.text


def test_deflated_transfer_syntax_loads_like_uncompressed(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    plain = load_dicom_series(write_series(tmp_path / "plain", [0.0, 1.5]))
    deflated = load_dicom_series(
        write_series(tmp_path / "deflated", [0.0, 1.5], transfer_syntax=DeflatedExplicitVRLittleEndian)
    )
    np.testing.assert_array_equal(deflated.numpy(), plain.numpy())


def test_orientation_print_noise_stays_one_stack(tmp_path):
    for k, eps in enumerate([0.00049, 0.00051, 0.0004, 0.0006]):  # straddles any 3-decimal rounding
        iop = (1.0, eps, 0.0, -eps, 1.0, 0.0)
        write_slice(tmp_path / f"s{k}", ramp_slices(4)[k], (10.0, 20.0, 2.0 * k), orientation=iop)
    vol = load_dicom_series(tmp_path)
    assert vol.shape[-1] == 4 and vol.meta["problems"] == []


def test_gap_over_the_limit_splits_the_series_and_keeps_the_largest_part(tmp_path):
    from m2f_med.io.dicom_stack import REFUSE_GAP_FACTOR

    assert REFUSE_GAP_FACTOR == 10
    names = [f"s{k}" for k in range(6)]
    write_series(tmp_path / "two_stacks", [0.0, 2.0, 4.0, 6.0, 28.0, 30.0], names=names)  # 22 mm = 11x 2 mm
    for mode in ("resample", "error"):  # the kept part is uniform: no resampling either way
        vol = load_dicom_series(tmp_path / "two_stacks", on_nonuniform=mode)
        assert vol.shape[-1] == 4 and [Path(p).name for p in vol.meta["source_paths"]] == names[:4]
        assert abs(float(vol.affine[2, 3]) - 0.0) < 1e-6 and abs(float(vol.affine[2, 2]) - 2.0) < 1e-6
        assert None not in vol.meta["SOPInstanceUIDs"]
        (line,) = [p for p in vol.meta["problems"] if "gap" in p]
        assert line.startswith("a gap of 22.0 mm (11x the usual 2.00 mm spacing, limit 10x) splits the series")
        assert "kept the largest part (4 slices), left out 2: s4, s5" in line
    write_series(tmp_path / "halves", [0.0, 2.0, 4.0, 26.0, 28.0, 30.0])  # 3 + 3: no way to tell which
    with pytest.raises(VolumeError, match=r"a gap of 22.0 mm .* into 2 parts .* equal \(3 slices each\)") as err:
        load_dicom_series(tmp_path / "halves")
    assert "halves" in str(err.value) and "\n" not in str(err.value)
    write_series(tmp_path / "nine_x", [0.0, 2.0, 4.0, 6.0, 24.0])  # 18 mm = 9x: filled, with the warning
    vol = load_dicom_series(tmp_path / "nine_x")
    assert vol.shape[-1] == 13 and any(p.startswith("WARNING: a gap") for p in vol.meta["problems"])


def test_plan_stack_refuses_a_gap_over_the_limit_as_a_backstop():
    from m2f_med.io.dicom_stack import plan_stack

    z = [0.0, 2.0, 4.0, 6.0, 28.0]
    with pytest.raises(VolumeError, match=r"a gap of 22.0 mm .* 11x the usual 2.00 mm spacing \(limit 10x\)"):
        plan_stack(np.array([[0.0, 0.0, v] for v in z]), (1, 0, 0, 0, 1, 0), (1.0, 1.0), where="x")
