"""Mask2FormerLoss and label → target conversion: empty slices, ignore index, autocast, MONAI trainer."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from m2f_med.networks import Mask2FormerLoss, Mask2FormerNet, Mask2FormerOutput, label_to_targets

K = 3


def _output(batch=2, queries=6, height=16, width=12, aux=2, seed=0, grad=True) -> Mask2FormerOutput:
    gen = torch.Generator().manual_seed(seed)

    def pair():
        cls = torch.randn(batch, queries, K + 1, generator=gen)
        mask = torch.randn(batch, queries, height, width, generator=gen)
        return cls.requires_grad_(grad), mask.requires_grad_(grad)

    cls, mask = pair()
    return Mask2FormerOutput(class_logits=cls, mask_logits=mask, aux_outputs=[pair() for _ in range(aux)])


def _label(batch=2, height=64, width=48) -> torch.Tensor:
    label = torch.zeros(batch, 1, height, width)
    label[0, 0, 8:30, 8:20] = 1
    label[0, 0, 40:60, 24:44] = 3
    return label


def test_targets_from_label_map():
    label = _label()
    label[1, 0, 0:4, 0:4] = 2
    targets = label_to_targets(label, num_classes=K)
    assert [c.tolist() for c in targets.class_labels] == [[0, 2], [1]]
    assert targets.mask_labels[0].shape == (2, 64, 48) and targets.mask_labels[0].dtype == torch.float32
    assert targets.mask_labels[0][0].sum() == 22 * 12 and targets.valid is None


def test_empty_slice_targets_have_hf_form():
    targets = label_to_targets(torch.zeros(1, 1, 8, 8), num_classes=K)
    assert targets.mask_labels[0].shape == (0, 8, 8) and targets.mask_labels[0].dtype == torch.float32
    assert targets.class_labels[0].shape == (0,) and targets.class_labels[0].dtype == torch.long


def test_instance_classes_split_components():
    label = torch.zeros(1, 1, 20, 20)
    label[0, 0, 1:4, 1:4] = 2
    label[0, 0, 10:14, 10:14] = 2
    label[0, 0, 16:18, 1:3] = 1
    semantic = label_to_targets(label, K)
    instances = label_to_targets(label, K, instance_classes=[2])
    assert semantic.class_labels[0].tolist() == [0, 1]
    assert instances.class_labels[0].tolist() == [0, 1, 1]
    assert sorted(m.sum().item() for m in instances.mask_labels[0][1:]) == [9.0, 16.0]


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"\[7\]"):
        label_to_targets(torch.full((1, 1, 4, 4), 7.0), K)
    with pytest.raises(ValueError, match="non-integer"):
        label_to_targets(torch.full((1, 1, 4, 4), 0.5), K)
    with pytest.raises(ValueError, match="does not fit"):
        Mask2FormerLoss(K, train_num_points=64)(_output(height=10), _label())


def test_batch_with_and_without_foreground_is_finite_and_differentiable():
    loss_fn = Mask2FormerLoss(K, train_num_points=256)
    out = _output()
    loss = loss_fn(out, _label())  # image 1 has no foreground at all
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    loss.backward()
    assert bool(torch.isfinite(out.mask_logits.grad).all()) and float(out.class_logits.grad.abs().sum()) > 0
    assert "loss_dice_1" in loss_fn.last_losses  # auxiliary layers counted
    # the empty image's queries are all pushed towards "no object"
    assert float(out.class_logits.grad[1, :, K].sum()) < 0


def test_all_background_batch_trains_as_no_object():
    loss_fn = Mask2FormerLoss(K, train_num_points=256)
    out = _output(aux=0)
    loss = loss_fn(out, torch.zeros(2, 1, 64, 48))
    loss.backward()
    assert bool(torch.isfinite(loss))
    assert float(loss_fn.last_losses["loss_mask"]) == 0.0 and float(loss_fn.last_losses["loss_dice"]) == 0.0
    assert float(out.class_logits.grad[..., K].max()) < 0  # raise every "no object" logit


def test_metatensor_float_label_and_plain_mapping_output():
    label = MetaTensor(_label(), affine=torch.eye(4))
    out = _output(grad=False)
    loss_fn = Mask2FormerLoss(K, train_num_points=128)
    torch.manual_seed(3)
    loss = loss_fn(out, label)
    torch.manual_seed(3)
    as_dict = loss_fn(dict(out), _label())
    assert bool(torch.isfinite(loss)) and torch.equal(loss, as_dict)
    with pytest.raises(ValueError, match="no mask_logits"):
        loss_fn({"class_logits": out.class_logits}, _label())


def test_ignore_path_equals_hf_path_without_ignored_pixels():
    """The ignore-aware sampling consumes the same random numbers as HF's, so with nothing ignored it agrees."""
    loss_fn = Mask2FormerLoss(K, train_num_points=200)
    label = _label()
    out = _output(grad=False)
    torch.manual_seed(5)
    hf_value = loss_fn(out, label)
    targets = label_to_targets(label, K)
    crit = loss_fn.criterion
    aux = [{"masks_queries_logits": m, "class_queries_logits": c} for c, m in out.aux_outputs]
    torch.manual_seed(5)
    ours = crit(
        out.mask_logits,
        out.class_logits,
        targets.mask_labels,
        targets.class_labels,
        aux,
        valid=torch.ones(2, 1, 64, 48),
    )
    ours_total = sum(
        v * next(w for k, w in loss_fn.weight_dict.items() if k in name) for name, v in ours.items()
    )
    torch.testing.assert_close(ours_total, hf_value)


def test_ignored_region_does_not_count():
    """Changing predictions deep inside the ignored region leaves the loss unchanged."""
    loss_fn = Mask2FormerLoss(K, train_num_points=300)
    label = _label()
    label[:, :, :, 24:] = 255  # right half ignored in both slices (cells 6.. of the 12-wide logits)
    base = _output(grad=False, aux=1)
    changed = base.to(torch.float32, copy=True)
    for m in [changed.mask_logits] + [m for _, m in changed.aux_outputs]:
        m[..., 8:] = torch.randn_like(m[..., 8:]) * 10  # 2 cells away from the boundary
    torch.manual_seed(7)
    a = loss_fn(base, label)
    torch.manual_seed(7)
    b = loss_fn(changed, label)
    torch.testing.assert_close(a, b)
    torch.manual_seed(7)
    full = Mask2FormerLoss(K, train_num_points=300, ignore_index=None)(
        changed, torch.where(label == 255, 0, label)
    )
    assert not torch.allclose(full, b)  # without the ignore the changed logits do count


def test_loss_runs_in_fp32_under_cpu_autocast():
    out = _output(aux=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = Mask2FormerOutput(
            class_logits=out.class_logits.bfloat16(), mask_logits=out.mask_logits.bfloat16()
        )
        loss = Mask2FormerLoss(K, train_num_points=128)(bf16, _label())
    assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))


def test_survives_monai_supervised_trainer():
    """MONAI stores the network output as PRED, feeds it to the loss and decollates it afterwards."""
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    net = Mask2FormerNet(preset="tiny", in_channels=1, num_classes=K, num_queries=4)
    batch = {"image": torch.rand(2, 1, 32, 32), "label": torch.zeros(2, 1, 32, 32)}
    batch["label"][0, 0, 4:12, 4:12] = 2
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), 1e-4),
        loss_function=Mask2FormerLoss(K, train_num_points=64),
    )
    before = net.hf_model.class_predictor.weight.detach().clone()
    trainer.run()
    output = trainer.state.output
    assert isinstance(output, list) and len(output) == 2  # decollated per image
    assert output[0]["pred"]["class_logits"].shape == (4, K + 1)
    assert bool(torch.isfinite(torch.as_tensor(output[0]["loss"])))
    assert not torch.equal(before, net.hf_model.class_predictor.weight)


def _class_output(predicted: int, batch=2, queries=6, height=16, width=12) -> Mask2FormerOutput:
    """Every query predicts class index ``predicted`` (logit 8, the rest 0); no auxiliary layers."""
    cls = torch.zeros(batch, queries, K + 1)
    cls[..., predicted] = 8.0
    mask = torch.zeros(batch, queries, height, width)
    return Mask2FormerOutput(class_logits=cls.requires_grad_(True), mask_logits=mask.requires_grad_(True))


def _partial_label(batch=2, height=64, width=48) -> torch.Tensor:
    label = torch.zeros(batch, 1, height, width)
    label[0, 0, 8:30, 8:20] = 1  # sample 0: class 1 present; sample 1: an empty slice of the same case
    return label


@pytest.mark.parametrize("rule", ["exclude", "marginal"])
def test_partial_labels_unlabelled_class_is_not_penalised_labelled_one_is(rule):
    """Toy case of both partial-label rules: the case labels class 1 only (labelled = [1, 0, 0]).

    Sample 0 holds class 1, sample 1 is an empty slice of the same case, where every query is unmatched.
    """
    loss_fn = Mask2FormerLoss(K, train_num_points=128, use_auxiliary=False, partial_class_loss=rule)
    labelled = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])

    def empty_slice_grad(predicted: int, partial: bool) -> torch.Tensor:
        out = _class_output(predicted)
        target = {"label": _partial_label(), "labelled": labelled} if partial else _partial_label()
        loss_fn(out, target).backward()
        return out.class_logits.grad[1]  # (Q, K + 1) on the empty slice

    # queries predicting class 3, which the case does not label: its logit is not pushed down on the empty
    # slice ("exclude": no gradient at all; "marginal": pushed up, if at all)
    g = empty_slice_grad(2, partial=True)
    assert float(g[:, 2].max()) < 1e-6
    if rule == "exclude":
        assert float(g[:, 1:3].abs().max()) == 0.0  # both unlabelled logits are out of the softmax
    # the same prediction with every class labelled is taught as wrong: class 3 pushed down
    assert float(empty_slice_grad(2, partial=False)[:, 2].min()) > 1e-3
    # predicting the labelled class 1 (index 0) where the case says background is penalised
    assert float(empty_slice_grad(0, partial=True)[:, 0].min()) > 1e-3
    # and class 2 (index 1), also unlabelled, is as free as class 3
    assert float(empty_slice_grad(1, partial=True)[:, 1].max()) < 1e-6
    # a labelled class that is present is still learnt: the matched query of sample 0 is pushed to class 1
    out = _class_output(2)
    loss_fn(out, {"label": _partial_label(), "labelled": labelled}).backward()
    assert float(out.class_logits.grad[0, :, 0].min()) < -1e-3


def test_marginal_rule_raises_unlabelled_logits_exclude_rule_leaves_them():
    """Why "exclude" is the default: with the marginal rule an unmatched query is pulled *towards* the
    unlabelled classes (the issue-11 failure: unsupervised masks called "liver"); "exclude" leaves them."""
    labelled = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    grads = {}
    for rule in ("exclude", "marginal"):
        out = _class_output(0)  # every query says class 1 (labelled, absent on the empty slice)
        Mask2FormerLoss(K, train_num_points=128, use_auxiliary=False, partial_class_loss=rule)(
            out, {"label": _partial_label(), "labelled": labelled}).backward()
        grads[rule] = out.class_logits.grad[1]
    assert float(grads["marginal"][:, 1:3].max()) < -1e-6  # gradient descent raises classes 2 and 3
    assert float(grads["exclude"][:, 1:3].abs().max()) == 0.0
    with pytest.raises(ValueError, match="partial_class_loss"):
        Mask2FormerLoss(K, partial_class_loss="ignore")


@pytest.mark.parametrize("rule", ["exclude", "marginal"])
def test_partial_class_loss_equals_hf_when_every_class_is_labelled(rule):
    loss_fn = Mask2FormerLoss(K, train_num_points=128, partial_class_loss=rule)
    out = _output()
    crit = loss_fn.criterion
    targets = label_to_targets(_label(), K)
    indices = [(torch.tensor([0, 2]), torch.tensor([1, 0])), (torch.tensor([], dtype=torch.long),) * 2]
    hf = crit.loss_labels(out.class_logits, targets.class_labels, indices)["loss_cross_entropy"]
    ours = crit._marginal_loss_labels(out.class_logits, targets.class_labels, indices, torch.ones(2, K))
    assert torch.allclose(hf, ours["loss_cross_entropy"], atol=1e-6)
    # all-ones labelled through the public API is HF's loss, bit for bit with the same seed
    torch.manual_seed(3)
    a = loss_fn(out, _label())
    torch.manual_seed(3)
    b = loss_fn(out, {"label": _label(), "labelled": torch.ones(2, K)})
    assert torch.equal(a, b)
