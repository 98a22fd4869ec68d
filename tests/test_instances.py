"""3D instance linking from per-slice query outputs, the baseline components rule, and the instance table."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from m2f_med.inference.instances import (
    InstanceSettings,
    SliceSegments,
    components_as_instances,
    instance_table,
    link_segments,
    read_instances_json,
    slice_segments,
    write_instances_json,
)


def _slice(shape, masks, scores, labels=None):
    seg = np.zeros(shape, np.int32)
    for i, m in enumerate(masks, start=1):
        seg[m] = i
    n = len(masks)
    return SliceSegments(seg, np.asarray(labels or [1] * n, np.int64), np.asarray(scores, np.float32),
                         np.ones(n, bool))


def _disk(shape, cx, cy, r):
    x, y = np.mgrid[: shape[0], : shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def test_one_lesion_spanning_slices_stays_one():
    shape = (32, 32)
    slices = [_slice(shape, [], [])] * 2
    slices += [_slice(shape, [_disk(shape, 14 + z // 2, 15, 3 + min(z, 8 - z))], [0.9]) for z in range(9)]
    slices += [_slice(shape, [], [])]
    inst = link_segments(slices, InstanceSettings(min_voxels=1))
    assert len(inst) == 1 and set(np.unique(inst.instance_map)) == {0, 1}
    assert inst.scores[1] == pytest.approx(0.9)
    assert (inst.instance_map[..., 2:11] == 1).any(axis=(0, 1)).all()


def test_two_touching_lesions_stay_two_when_their_slices_never_overlap():
    shape = (20, 20)
    left = np.zeros(shape, bool)
    left[2:10, 4:12] = True
    right = np.zeros(shape, bool)
    right[10:18, 4:12] = True  # shares an edge with `left` in every slice: one connected component
    slices = [_slice(shape, [left, right], [0.9, 0.6]) for _ in range(5)]
    inst = link_segments(slices, InstanceSettings(min_voxels=1))
    assert len(inst) == 2
    assert inst.instance_map[5, 5, 0] == 1 and inst.instance_map[15, 5, 4] == 2  # ids by decreasing score
    assert inst.scores == {1: pytest.approx(0.9), 2: pytest.approx(0.6)}
    # the connected-components baseline merges them into one lesion
    assert len(components_as_instances(inst.semantic, None, [1], min_voxels=1)) == 1


def test_lesions_stacked_without_overlap_stay_two_and_overlap_links():
    shape = (20, 20)
    a = np.zeros(shape, bool)
    a[2:8, 2:8] = True
    b = np.zeros(shape, bool)
    b[8:14, 8:14] = True  # touches `a` diagonally on the next slice, but their masks never overlap
    slices = [_slice(shape, [a], [0.8])] * 3 + [_slice(shape, [b], [0.8])] * 3
    assert len(link_segments(slices, InstanceSettings(min_voxels=1))) == 2
    shifted = np.roll(a, 2, axis=0)  # overlaps `a` by 4/6 of its area: the same lesion
    slices = [_slice(shape, [a], [0.8])] * 3 + [_slice(shape, [shifted], [0.4])] * 3
    inst = link_segments(slices, InstanceSettings(min_voxels=1))
    assert len(inst) == 1 and inst.scores[1] == pytest.approx(0.6)  # area-weighted mean of the slices


def test_small_and_low_score_instances_are_dropped():
    shape = (16, 16)
    big, tiny = np.zeros(shape, bool), np.zeros(shape, bool)
    big[2:8, 2:8] = True
    tiny[12, 12] = True
    slices = [_slice(shape, [big, tiny], [0.3, 0.9])] * 2
    inst = link_segments(slices, InstanceSettings(min_voxels=5))
    assert list(inst.labels) == [1] and inst.semantic[12, 12, 0] == 0
    assert len(link_segments(slices, InstanceSettings(min_voxels=5, instance_score_threshold=0.5))) == 0


def test_slice_segments_from_query_logits():
    h = w = 16
    mask_logits = torch.full((3, h // 4, w // 4), -10.0)
    mask_logits[0, :, :2] = 10.0  # query 0: left half
    mask_logits[1, :, 2:] = 10.0  # query 1: right half
    mask_logits[2] = 10.0  # query 2: everything, but it predicts "no object"
    class_logits = torch.tensor([[4.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    seg = slice_segments(class_logits, mask_logits, (h, w), [1])
    assert len(seg.labels) == 2 and seg.is_thing.all()
    p_class = torch.tensor([4.0, 0.0]).softmax(0)[0].item()
    # score = class probability x mean mask probability (below 1 where the bilinear logits cross 0)
    assert 0.9 * p_class < seg.scores[0] < p_class
    assert (seg.segment_map[:, :6] == 1).all() and (seg.segment_map[:, 10:] == 2).all()
    # a stricter class threshold drops query 1 (p = 0.73)
    assert len(slice_segments(class_logits, mask_logits, (h, w), [1], InstanceSettings(score_threshold=0.8)).labels) == 1
    # as a stuff class, both queries merge into one segment
    stuff = slice_segments(class_logits, mask_logits, (h, w), [])
    assert len(stuff.labels) == 1 and (stuff.segment_map > 0).all()


def test_instance_table_and_json_round_trip(tmp_path):
    ids = np.zeros((10, 12, 6), np.int32)
    ids[2:4, 3:7, 1:3] = 1  # 2 x 4 x 2 = 16 voxels
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])  # RAS affine: LPS = diag(2, 1, 3)
    affine[:3, 3] = [10.0, 20.0, -30.0]
    image = MetaTensor(torch.full((1, 10, 12, 6), 40.0), affine=torch.as_tensor(affine))
    from m2f_med.inference.instances import Instances

    inst = Instances(ids, (ids > 0).astype(np.uint8), {1: 1}, {1: 0.55})
    (row,) = instance_table(inst, image, {1: "lesion"})
    assert row["voxels"] == 16 and row["volume_ml"] == pytest.approx(16 * 6 / 1000)
    assert row["mean_intensity"] == 40.0 and row["low_confidence"] is True
    # centroid voxel (2.5, 4.5, 1.5) -> RAS (10 - 5, 20 - 4.5, -30 + 4.5) -> LPS (-5, -15.5, -25.5)
    assert row["centroid_lps_mm"] == [-5.0, -15.5, -25.5]
    assert row["bbox_voxels"] == {"min": [2, 3, 1], "max": [3, 6, 2]}
    path = write_instances_json(tmp_path / "instances.json", [row], {1: "lesion"}, [1], note="")
    doc = read_instances_json(path)
    assert doc["instances"][0]["id"] == 1 and doc["thing_classes"] == [1] and doc["labels"] == {"1": "lesion"}


def test_predict_instances_on_odd_sized_volumes_with_both_network_kinds():
    """Mask2Former (query linking) and a MONAI UNet (components) on a 37 x 41 x 5 volume: instances on its grid."""
    from monai.networks.nets import UNet

    from m2f_med.inference.bundle_model import BundleModel
    from m2f_med.inference.instances import predict_instances
    from m2f_med.networks import Mask2FormerNet

    torch.manual_seed(0)
    affine = torch.diag(torch.tensor([-1.2, -1.2, 3.0, 1.0], dtype=torch.float64))
    volume = MetaTensor(torch.randn(1, 37, 41, 5) * 100, affine=affine)
    unet = UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2))
    nets = {"connected-components": unet, "query-linking": Mask2FormerNet("tiny", in_channels=3, num_classes=1)}
    for rule, net in nets.items():
        model = BundleModel(network=net, labels={1: "lesion"}, num_context_slices=1, pixdim=[1.5, 1.5, -1],
                            intensity={"a_min": -160, "a_max": 240, "b_min": 0.0, "b_max": 1.0, "clip": True},
                            thing_classes=(1,), instance_settings={"min_voxels": 1, "score_threshold": 0.0})
        inst, info = predict_instances(volume, model)
        assert info["rule"] == rule
        assert inst.instance_map.shape == inst.semantic.shape == (37, 41, 5)
        assert set(np.unique(inst.instance_map)) - {0} == set(inst.labels)
        assert np.array_equal(inst.instance_map > 0, inst.semantic == 1)


def test_component_rule_drops_low_score_components_like_query_linking():
    # the UNet baseline's components obey instance_score_threshold too (mean probability as the score)
    sem = np.zeros((12, 12, 4), np.uint8)
    sem[1:5, 1:5, :] = 1
    sem[7:11, 7:11, :] = 1
    prob = np.zeros(sem.shape, np.float32)
    prob[1:5, 1:5, :] = 0.9
    prob[7:11, 7:11, :] = 0.4
    kept = components_as_instances(sem, prob, [1], min_voxels=1, min_score=0.5)
    assert len(kept) == 1 and kept.scores[1] == pytest.approx(0.9)
    assert kept.semantic[8, 8, 0] == 0 and kept.instance_map[8, 8, 0] == 0  # removed from both maps
    assert kept.semantic[2, 2, 0] == 1
    assert len(components_as_instances(sem, prob, [1], min_voxels=1)) == 2
