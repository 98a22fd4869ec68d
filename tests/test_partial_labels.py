"""Partial labels: which classes a case labels, the marginal UNet loss, and a bundle step on partial cases."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

from m2f_med.bundle import PartialLabelBatch, RemapLabelsByNamed
from m2f_med.networks import MarginalDiceCELoss

K = 3


def _label() -> torch.Tensor:
    label = torch.zeros(2, 1, 16, 16)
    label[:, 0, 2:8, 2:8] = 1
    return label


def test_remap_records_the_classes_a_case_labels():
    model = {"1": "liver", "2": "spleen", "3": "aorta"}
    remap = RemapLabelsByNamed("label", model, labelled_key="labelled")
    out = remap({"label": torch.ones(1, 2, 2, 1), "label_names": {"1": "spleen"}})
    assert out["labelled"].tolist() == [0.0, 1.0, 0.0] and out["label"].max() == 2
    full = remap({"label": torch.ones(1, 2, 2, 1), "label_names": {"1": "liver", "7": "spleen", "9": "aorta"}})
    assert full["labelled"].tolist() == [1.0, 1.0, 1.0]


def test_marginal_dice_ce_is_monai_dice_ce_when_every_class_is_labelled():
    logits = torch.randn(2, K + 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)(logits, _label())
    ours = MarginalDiceCELoss()(logits, {"label": _label(), "labelled": torch.ones(2, K)})
    assert torch.allclose(ref, ours, atol=1e-5)
    assert torch.allclose(MarginalDiceCELoss()(logits, _label()), ours)


def test_marginal_dice_ce_does_not_penalise_an_unlabelled_class():
    """The case labels class 1 only; a network that calls the background class 3 pays nothing for it."""
    label = _label()
    logits = torch.full((2, K + 1, 16, 16), -8.0)
    logits[:, 1][label[:, 0] == 1] = 8.0  # class 1 right
    logits[:, 3][label[:, 0] == 0] = 8.0  # background called class 3
    logits.requires_grad_(True)
    partial = {"label": label, "labelled": torch.tensor([[1.0, 0, 0]] * 2)}
    loss = MarginalDiceCELoss()(logits, partial)
    loss.backward()
    assert float(loss.detach()) < 1e-3 and float(logits.grad.abs().max()) < 1e-4
    # with every class labelled the same prediction is wrong
    assert float(MarginalDiceCELoss()(logits.detach(), label)) > 1.0
    # calling the labelled class 1 background-only is still penalised under partial labels
    bad = logits.detach().clone()
    bad[:, 1], bad[:, 0] = -8.0, 8.0
    assert float(MarginalDiceCELoss()(bad, partial)) > 1.0


def test_prepare_batch_passes_labelled_classes_to_the_loss():
    batch = {"image": torch.zeros(2, 3, 4, 4), "label": torch.zeros(2, 1, 4, 4), "labelled": torch.ones(2, K)}
    image, target = PartialLabelBatch()(batch, "cpu")
    assert image.shape == (2, 3, 4, 4) and set(target) == {"label", "labelled"}
    image, target = PartialLabelBatch()({"image": batch["image"], "label": batch["label"]}, "cpu")
    assert isinstance(target, torch.Tensor)
