"""Lesion QC (m2f_med.inference.lesion_qc): verdicts on hand-made lesions with known faults, field of view."""

from __future__ import annotations

import numpy as np
import pytest

from m2f_med.inference.lesion_qc import (
    LesionQCSettings,
    body_parts_mask,
    field_of_view_mm,
    lesion_quality_control,
)

SPACING = (1.0, 1.0, 3.0)
AFFINE = np.diag([*SPACING, 1.0])


def _phantom():
    """A 120 x 120 x 10 CT: a round body at +40 HU in air (-1000), a 'table' strip at +200 HU below it."""
    x, y = np.mgrid[:120, :120]
    img = np.full((120, 120, 10), -1000.0, np.float32)
    body = (x - 60) ** 2 + (y - 55) ** 2 < 45 ** 2
    img[body] = 40.0
    img[:, 108:114] = 200.0  # the table: a separate component outside the body
    return img


def _rows(ids, img, scores):
    rows = []
    for i, score in scores.items():
        m = ids == i
        rows.append({"id": i, "score": score, "volume_ml": float(m.sum()) * np.prod(SPACING) / 1000,
                     "mean_intensity": float(img[m].mean())})
    return rows


def test_verdicts_on_known_faults():
    img = _phantom()
    ids = np.zeros(img.shape, np.int32)
    ids[50:60, 50:60, 3:6] = 1  # solid, in the body, confident: ok
    ids[30:40, 50:60, 3:6] = 2
    img[30:40, 50:60, 3:6] = -800.0  # an "air lesion" inside the body (lung-like): fail on HU
    ids[40:60, 109:113, 3:6] = 3  # on the table: fail, outside the body (its HU +200 is inside the range)
    ids[70:80, 40:50, 3:6] = 4  # solid but low score: check
    ids[30:90, 30:80, 1:9] = np.where(ids[30:90, 30:80, 1:9] == 0, 5, ids[30:90, 30:80, 1:9])  # big: check
    rows = _rows(ids, img, {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.3, 5: 0.95})
    settings = LesionQCSettings(max_field_of_view_mm=500, max_volume_ml=20, hu_mean_range=(-150, 250))
    out, scan = lesion_quality_control(rows, ids, img, AFFINE, settings, modality="CT")
    by = {r["id"]: r for r in out}
    assert by[1]["qc"] == "ok" and by[1]["qc_reasons"] == []
    assert by[2]["qc"] == "fail" and "air or lung" in by[2]["qc_reasons"][0]
    assert by[3]["qc"] == "fail" and any("outside the body" in s for s in by[3]["qc_reasons"])
    assert by[4]["qc"] == "check" and by[4]["qc_reasons"] == ["low score 0.30 (< 0.7)"]
    assert by[5]["qc"] == "check" and "larger than any training lesion" in by[5]["qc_reasons"][0]
    assert scan["reasons"] == [] and scan["field_of_view_mm"] == [120.0, 120.0, 30.0] and scan["modality"] == "CT"
    assert rows[0].get("qc") is None  # inputs are not modified


def test_input_larger_than_the_training_images_flags_every_lesion():
    img = _phantom()
    ids = np.zeros(img.shape, np.int32)
    ids[50:60, 50:60, 3:6] = 1
    rows = _rows(ids, img, {1: 0.95})
    out, scan = lesion_quality_control(rows, ids, img, AFFINE, LesionQCSettings(max_field_of_view_mm=100),
                                       modality="CT")
    assert len(scan["reasons"]) == 1 and "120 x 120 mm" in scan["reasons"][0]
    assert out[0]["qc"] == "check" and "larger than the training images" in out[0]["qc_reasons"][0]
    # not CT: no HU or body checks, the field of view still counts
    img_mr = np.where(ids == 1, -900.0, img)
    out, _ = lesion_quality_control(_rows(ids, img_mr, {1: 0.95}), ids, img_mr, AFFINE,
                                    LesionQCSettings(max_field_of_view_mm=200), modality="MR")
    assert out[0]["qc"] == "ok"


def test_field_of_view_ignores_grid_orientation():
    a = np.array([[0, 0, 3.0, 0], [-0.8, 0, 0, 0], [0, 0.8, 0, 0], [0, 0, 0, 1]])  # a permuted, flipped grid
    lr, ap, si = field_of_view_mm((20, 30, 100), a)
    assert (lr, ap, si) == pytest.approx((300.0, 16.0, 24.0))
    assert field_of_view_mm((30, 20, 100), a[:, [1, 0, 2, 3]]) == pytest.approx((300.0, 16.0, 24.0))
    # an oblique grid (45 degrees about S-I) keeps its own extent, not its world bounding box (x 1.41)
    c = np.cos(np.pi / 4)
    rot = np.array([[c, -c, 0, 0], [c, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ np.diag([1.0, 1.0, 3.0, 1.0])
    assert field_of_view_mm((185, 150, 50), rot) == pytest.approx((185.0, 150.0, 150.0))
    with pytest.raises(ValueError, match="3D"):
        field_of_view_mm((4, 4), np.eye(4))


def test_limbs_are_body_the_table_is_not():
    """A whole-CT cross-section: trunk, two arms (separate components), a thin table below."""
    img = np.full((200, 160, 4), -1000.0, np.float32)
    x, y = np.mgrid[:200, :160]
    img[(x - 100) ** 2 / 60 ** 2 + (y - 70) ** 2 / 40 ** 2 < 1] = 40.0  # trunk
    for cx in (20, 180):
        img[(x - cx) ** 2 + (y - 70) ** 2 < 12 ** 2] = 40.0  # arms
    img[:, 120:123] = 300.0  # table shell, 3 voxels thick
    body = body_parts_mask(img)
    assert body[100, 70].all() and body[20, 70].all() and body[180, 70].all()
    assert not body[:, 120:123].any()
    ids = np.zeros(img.shape, np.int32)
    ids[15:25, 65:75, 1:3] = 1  # a lesion in an arm
    ids[90:110, 120:123, 1:3] = 2  # "lesion" on the table
    out, _ = lesion_quality_control(_rows(ids, img, {1: 0.9, 2: 0.9}), ids, img, AFFINE,
                                    LesionQCSettings(hu_mean_range=(-150, 400)), modality="CT")
    assert out[0]["qc"] == "ok" and out[1]["qc"] == "fail"
    # a row whose lesion has no voxels is not passed as ok
    out, _ = lesion_quality_control([{"id": 9, "score": 0.9}], ids, img, AFFINE, LesionQCSettings(), modality="CT")
    assert out[0]["qc"] == "check" and "not assessed" in out[0]["qc_reasons"][0]
    with pytest.raises(ValueError, match="no 'id'"):
        lesion_quality_control([{"score": 0.9}], ids, img, AFFINE, LesionQCSettings())


def test_settings_are_checked():
    assert LesionQCSettings.from_mapping(None) == LesionQCSettings()
    s = LesionQCSettings.from_mapping({"max_field_of_view_mm": 200, "hu_mean_range": [-100, 100]}, low_score=0.5)
    assert s.max_field_of_view_mm == 200.0 and s.hu_mean_range == (-100.0, 100.0) and s.low_score == 0.5
    assert LesionQCSettings.from_mapping(s.as_dict()) == s
    with pytest.raises(ValueError, match="unknown lesion_qc keys"):
        LesionQCSettings.from_mapping({"max_fov": 1})
    with pytest.raises(ValueError, match="low < high"):
        LesionQCSettings.from_mapping({"hu_mean_range": [100, -100]})
    with pytest.raises(ValueError, match="positive"):
        LesionQCSettings.from_mapping({"max_volume_ml": 0})
    with pytest.raises(ValueError, match=r"\[low, high\] HU"):
        LesionQCSettings.from_mapping({"hu_mean_range": "-150,200"})
    with pytest.raises(ValueError, match="fraction"):
        LesionQCSettings.from_mapping({"outside_body_fail": 20})
    with pytest.raises(ValueError, match="a number"):
        LesionQCSettings.from_mapping({"low_score": "0.5"})
    with pytest.raises(ValueError, match="differ in shape"):
        lesion_quality_control([], np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), AFFINE, LesionQCSettings())
