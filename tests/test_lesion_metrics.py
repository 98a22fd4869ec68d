"""Lesion-wise metrics on hand-made masks with known TP / FP / FN, Dice and PQ."""

import numpy as np
import pytest

from m2f_med.evaluation import lesion_metrics, reference_instances, summarise_lesion_metrics


def _box(shape, lo, hi, value=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return out


def test_known_tp_fp_fn_and_pq():
    shape = (40, 40, 20)
    # reference: lesion A (10x10x10 = 1000 voxels) and lesion B (5x5x4 = 100), far apart
    ref = _box(shape, (0, 0, 0), (10, 10, 10), 1)
    _box(shape, (30, 30, 10), (35, 35, 14), 2, ref)
    # prediction: A shifted by 2 voxels in x (IoU 800/1200 = 2/3), a false positive C, B missed
    pred = _box(shape, (2, 0, 0), (12, 10, 10), 7)
    _box(shape, (20, 0, 0), (24, 4, 4), 3, pred)
    m = lesion_metrics(pred, ref)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert (m.pq_tp, m.pq_fp, m.pq_fn) == (1, 1, 1)
    assert m.sensitivity == pytest.approx(0.5) and m.precision == pytest.approx(0.5) and m.f1 == pytest.approx(0.5)
    assert m.sq == pytest.approx(2 / 3, abs=1e-5)
    assert m.rq == pytest.approx(0.5)
    assert m.pq == pytest.approx(1 / 3, abs=1e-5)
    # Dice of the semantic masks: overlap 800, |pred| = 1000 + 64, |ref| = 1100
    assert m.dice == pytest.approx(2 * 800 / (1064 + 1100))
    assert (m.num_reference, m.num_predicted) == (2, 2)


def test_weak_overlap_is_a_detection_but_not_a_pq_match():
    shape = (30, 10, 10)
    ref = _box(shape, (0, 0, 0), (10, 10, 10))
    pred = _box(shape, (7, 0, 0), (17, 10, 10))  # IoU 300 / 1700 = 0.176: > 0.1, < 0.5
    m = lesion_metrics(pred, ref)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert (m.pq_tp, m.pq_fp, m.pq_fn) == (0, 1, 1) and m.pq == 0.0


def test_one_prediction_covering_two_lesions_detects_one():
    shape = (30, 10, 10)
    ref = _box(shape, (0, 0, 0), (10, 10, 10), 1)
    _box(shape, (12, 0, 0), (22, 10, 10), 2, ref)
    pred = _box(shape, (0, 0, 0), (22, 10, 10), 1)  # one blob over both: IoU 1000/2200 with each
    m = lesion_metrics(pred, ref)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)  # one-to-one pairing


def test_empty_cases_and_pooling():
    shape = (8, 8, 8)
    empty = np.zeros(shape, np.int32)
    both_empty = lesion_metrics(empty, empty)
    assert both_empty.dice == 1.0 and both_empty.f1 == 1.0 and both_empty.pq == 1.0
    ref = _box(shape, (0, 0, 0), (4, 4, 4))
    missed = lesion_metrics(empty, ref)
    assert (missed.tp, missed.fp, missed.fn) == (0, 0, 1) and missed.dice == 0.0 and missed.f1 == 0.0
    perfect = lesion_metrics(ref, ref)
    assert perfect.pq == pytest.approx(1.0) and perfect.dice == 1.0
    s = summarise_lesion_metrics({"a": missed, "b": perfect})
    assert s["dice_mean"] == pytest.approx(0.5) and (s["tp"], s["fn"]) == (1, 1)
    assert s["f1"] == pytest.approx(2 / 3) and s["pq"] == pytest.approx(2 / 3, abs=1e-5)
    with pytest.raises(ValueError):
        lesion_metrics(empty, np.zeros((8, 8, 9)))


def test_reference_instances_are_3d_components():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[0:3, 0:3, 0:3] = 1
    lab[3, 3, 3] = 1  # touches the first by a corner: 26-connected, same lesion
    lab[7:9, 7:9, 7:9] = 1
    inst = reference_instances(lab)
    assert inst.max() == 2 and inst[3, 3, 3] == inst[0, 0, 0]
