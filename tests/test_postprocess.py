"""Semantic probabilities and instance predictions from hand-made query logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m2f_med.networks import (
    Mask2FormerOutput,
    instance_predictions,
    semantic_probabilities,
    upsample_mask_logits,
)


def _reference(class_logits, mask_logits, size):
    """Paper formula, one query at a time, plain resize of the logits (sizes here are multiples of 4)."""
    probs = torch.zeros(class_logits.shape[0], class_logits.shape[2] - 1, *size)
    for q in range(class_logits.shape[1]):
        cls = class_logits[:, q].softmax(-1)[:, :-1]
        mask = F.interpolate(
            mask_logits[:, q : q + 1], size=size, mode="bilinear", align_corners=False
        ).sigmoid()
        probs += cls[:, :, None, None] * mask
    return probs / probs.sum(1, keepdim=True).clamp(min=1)


def test_matches_paper_formula_with_many_queries():
    torch.manual_seed(0)
    out = Mask2FormerOutput(class_logits=torch.randn(2, 20, 4) * 3, mask_logits=torch.randn(2, 20, 6, 5) * 3)
    probs = semantic_probabilities(out, size=(24, 20))
    assert probs.shape == (2, 3, 24, 20)
    torch.testing.assert_close(probs, _reference(out.class_logits, out.mask_logits, (24, 20)))


def test_sum_is_at_most_one_when_queries_overlap():
    cls = torch.tensor([[[8.0, -8.0, -8.0]] * 10])  # ten queries all sure of class 1
    out = Mask2FormerOutput(class_logits=cls, mask_logits=torch.full((1, 10, 4, 4), 8.0))
    probs = semantic_probabilities(out, size=(16, 16))
    assert float(probs.sum(1).max()) <= 1 + 1e-6
    torch.testing.assert_close(probs[:, 0], torch.ones(1, 16, 16), atol=1e-3, rtol=0)


def test_two_classes_on_two_halves():
    cls = torch.tensor([[[9.0, -9.0, -9.0], [-9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]]])
    masks = torch.full((1, 3, 4, 4), -9.0)
    masks[0, 0, :, :2] = 9.0
    masks[0, 1, :, 2:] = 9.0
    masks[0, 2] = 9.0  # a "no object" query with a full mask adds nothing
    probs = semantic_probabilities(Mask2FormerOutput(class_logits=cls, mask_logits=masks), size=(16, 16))
    labels = probs.argmax(1)[0]
    assert (labels[:, :7] == 0).all() and (labels[:, 9:] == 1).all()
    assert float(probs[0, :, :, :7].sum(0).min()) > 0.99


def test_odd_size_keeps_the_quarter_grid_aligned():
    logits = torch.full((1, 1, 63, 48), -5.0)
    logits[0, 0, 10, 20] = 5.0
    up = upsample_mask_logits(logits, (250, 190))
    assert up.shape == (1, 1, 250, 190)
    row, col = divmod(int(up[0, 0].argmax()), 190)
    assert 40 <= row <= 43 and 80 <= col <= 83  # the pixels cell (10, 20) covers
    # a size that does not fit the 1/4 grid is resized
    assert upsample_mask_logits(logits, (100, 100)).shape == (1, 1, 100, 100)


def test_unbatched_mapping_from_decollate():
    torch.manual_seed(1)
    out = Mask2FormerOutput(class_logits=torch.randn(2, 5, 3), mask_logits=torch.randn(2, 5, 4, 4))
    item = {"class_logits": out.class_logits[1], "mask_logits": out.mask_logits[1]}
    torch.testing.assert_close(
        semantic_probabilities(item, (16, 16)), semantic_probabilities(out, (16, 16))[1]
    )
    with pytest.raises(ValueError, match="do not match"):
        semantic_probabilities(
            {"class_logits": torch.zeros(1, 5, 3), "mask_logits": torch.zeros(1, 4, 4, 4)}, (4, 4)
        )
    with pytest.raises(TypeError):
        semantic_probabilities(torch.zeros(3), (4, 4))


def test_instances_of_one_class_are_separate():
    cls = torch.tensor([[[6.0, -6.0, -6.0], [6.0, -6.0, -6.0], [-6.0, -6.0, 6.0], [6.0, -6.0, -6.0]]])
    masks = torch.full((1, 4, 8, 8), -6.0)
    masks[0, 0, 1:3, 1:3] = 6.0  # lesion A
    masks[0, 1, 5:7, 4:8] = 6.0  # lesion B, same class
    masks[0, 2, 0:4, 0:4] = 6.0  # "no object" query: low score
    # query 3 is sure of class 1 but has an empty mask: dropped
    result = instance_predictions(Mask2FormerOutput(class_logits=cls, mask_logits=masks), size=(32, 32))
    assert len(result) == 1
    inst = result[0]
    assert len(inst) == 2 and inst.labels.tolist() == [1, 1]
    assert inst.masks.shape == (2, 32, 32) and inst.masks.dtype == torch.bool
    areas = sorted(int(m.sum()) for m in inst.masks)
    assert 40 <= areas[0] <= 100 and 100 <= areas[1] <= 160  # 2×2 and 2×4 cells of 16 px each, soft edges
    # score = class probability × mean mask probability inside the mask (paper's instance inference)
    class_prob = torch.tensor([6.0, -6.0, -6.0]).softmax(0)[0]
    up = F.interpolate(masks[:, :2], size=(32, 32), mode="bilinear", align_corners=False)[0].sigmoid()
    expected = torch.stack([class_prob * up[q][up[q] > 0.5].mean() for q in range(2)])
    torch.testing.assert_close(inst.scores, expected.sort(descending=True).values)
    torch.testing.assert_close(inst.masks, (up > 0.5)[expected.argsort(descending=True)])
    strict = instance_predictions(
        Mask2FormerOutput(class_logits=cls, mask_logits=masks), size=(32, 32), score_threshold=0.9999
    )
    assert len(strict[0]) == 0
