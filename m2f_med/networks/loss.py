"""Mask-classification loss for MONAI's trainer: label map in, HF's Hungarian loss out.

What is HF's (``transformers.models.mask2former.modeling_mask2former``): the Hungarian matcher and the loss
of Mask2Former (Cheng et al., CVPR 2022, Sec. 3.2 and 4): class cross-entropy with a down-weighted
"no object" class, and mask binary cross-entropy + Dice computed on ``train_num_points`` sampled points
(importance sampling of uncertain points, PointRend-style), repeated for every decoder layer (auxiliary
losses), weighted ``class 2, mask 5, dice 5``.

What is ours:

* label map ``(B, 1, H, W)`` → per-slice targets (:func:`~m2f_med.networks.targets.label_to_targets`);
  a slice without foreground has no target and trains every query towards "no object";
* the label is zero-padded (background) at the bottom/right to ``4 · ceil(H / 4)`` so that HF's normalised
  point coordinates address the same place in the 1/4-resolution logits and in the label (the network pads
  the image the same way);
* ``ignore_index``: HF's point-sampled loss has none. When a batch contains ignored pixels we sample points
  in the same way but (1) the matcher uses only points on valid pixels, (2) importance sampling never picks
  an ignored point, and (3) points that still land on ignored pixels (the uniformly drawn share) get weight 0
  in the mask BCE (averaged over valid points) and in the Dice sums. A point counts as valid when the
  bilinear sample of the 0/1 validity map there is > 0.5. Without ignored pixels HF's code runs unchanged,
  and the ignore-aware path then gives the same value for the same random seed;
* partial labels (``labelled``): a case that labels only some classes (a manual spleen mask) must not teach
  the others as absent. Two rules for the class cross-entropy of an *unmatched* query (``partial_class_loss``):

  - ``"exclude"`` (default): the classes the case does not label are left out of that query's softmax, so
    its loss is ``-log p'_{no object}`` with ``p'`` the softmax over {labelled classes, no object}: an
    unlabelled class's logit gets no gradient at all (neither pushed up nor down), while "not a labelled
    class here" is still taught;
  - ``"marginal"``: the marginal loss of Shi et al. 2021 (Sec. 3.2) carried over to queries: the target is
    the set {no object} ∪ {unlabelled classes}, loss ``-log Σ_{c ∈ set} p_c``. Its gradient *raises* the
    unlabelled logits of every unmatched query, whose masks (unlike pixels) are never supervised.

  ``"exclude"`` is the default for that reason (tested on a toy case), not because it measured better: on
  the organ bundle's data (a fully labelled CT plus two crops that label only the aorta or the spleen) both
  rules ended at the same validation liver Dice (0.26 vs 0.24 after the shipped model's budget, seed 42;
  bundles/m2f_ct_organs/docs/README.md, "Issue 11 comparison").

  Both keep HF's "no object" weight; matched queries (full softmax, target = their labelled class), the
  matcher and the mask losses are unchanged: targets exist only for labelled classes, and a labelled
  class's mask is complete, so every pixel outside it is truly "not that class". With every class labelled
  both rules equal HF's weighted cross-entropy exactly;
* mixed precision: the loss always runs in float32 with autocast disabled.

Reference: Shi G., Xiao L., Chen Y., Zhou S.K. Marginal loss and exclusion loss for partially supervised
multi-organ segmentation. Medical Image Analysis 70, 2021, 101979 (Sec. 3.2, marginal loss; the
``"exclude"`` rule here is not their exclusion loss, which adds a penalty on overlaps of labelled and
unlabelled classes, but the same principle as ignoring unlabelled class logits in the universal-model
recipes, e.g. Liu J. et al. CLIP-driven universal model, ICCV 2023, Sec. 3.3: a case supervises only the
classes it labels).
https://doi.org/10.1016/j.media.2021.101979
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerHungarianMatcher,
    pair_wise_dice_loss,
    pair_wise_sigmoid_cross_entropy_loss,
    sample_point,
)
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss as HFMask2FormerLoss

from .config import PRESETS, quiet_hf
from .mask2former import MASK_STRIDE
from .targets import label_to_targets

__all__ = ["Mask2FormerLoss"]

_PAPER_NUM_POINTS = 12544  # 112 × 112, paper Sec. 3.2


def _valid_at(valid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Boolean validity ``(R, P)`` of points ``coords (R, P, 2)`` in [0, 1]² on maps ``valid (R, 1, H, W)``."""
    # border padding: a point within half a pixel of the slice edge is as valid as the edge pixel
    return sample_point(valid, coords, align_corners=False, padding_mode="border").squeeze(1) > 0.5


class _IgnoreAwareMatcher(Mask2FormerHungarianMatcher):
    """HF's Hungarian matcher; with a validity map, mask costs use only points on valid pixels."""

    @torch.no_grad()
    def forward(self, masks_queries_logits, class_queries_logits, mask_labels, class_labels, valid=None):
        if valid is None:
            return super().forward(masks_queries_logits, class_queries_logits, mask_labels, class_labels)
        from scipy.optimize import linear_sum_assignment

        indices = []
        for i in range(masks_queries_logits.shape[0]):
            pred_probs = class_queries_logits[i].softmax(-1)
            cost_class = -pred_probs[:, class_labels[i]]
            pred_mask = masks_queries_logits[i][:, None]
            target_mask = mask_labels[i].to(pred_mask)[:, None]
            # same draw as HF, then only the points on valid pixels
            points = torch.rand(1, self.num_points, 2, device=pred_mask.device)
            points = points[:, _valid_at(valid[i : i + 1], points)[0]]
            if points.shape[1] > 0:
                target = sample_point(
                    target_mask, points.repeat(target_mask.shape[0], 1, 1), align_corners=False
                )
                pred = sample_point(pred_mask, points.repeat(pred_mask.shape[0], 1, 1), align_corners=False)
                target, pred = target.squeeze(1), pred.squeeze(1)
                cost_mask = pair_wise_sigmoid_cross_entropy_loss(pred, target)
                cost_dice = pair_wise_dice_loss(pred, target)
            else:  # the whole slice is ignored: match on class alone
                cost_mask = cost_dice = torch.zeros_like(cost_class)
            cost = self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            indices.append(linear_sum_assignment(cost.cpu()))
        return [
            (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices
        ]


class _IgnoreAwareCriterion(HFMask2FormerLoss):
    """HF's Mask2Former loss; with a validity map, ignored pixels do not count (module docstring)."""

    def __init__(self, config: Mask2FormerConfig, weight_dict: dict[str, float], partial_class_loss: str = "exclude"):
        super().__init__(config=config, weight_dict=weight_dict)
        self.partial_class_loss = partial_class_loss
        self.matcher = _IgnoreAwareMatcher(
            cost_class=config.class_weight,
            cost_dice=config.dice_weight,
            cost_mask=config.mask_weight,
            num_points=self.num_points,
        )

    def forward(
        self,
        masks_queries_logits,
        class_queries_logits,
        mask_labels,
        class_labels,
        auxiliary_predictions=None,
        valid=None,
        labelled=None,
    ):
        if valid is None and labelled is None:
            return super().forward(
                masks_queries_logits, class_queries_logits, mask_labels, class_labels, auxiliary_predictions
            )
        indices = self.matcher(
            masks_queries_logits, class_queries_logits, mask_labels, class_labels, valid=valid
        )
        num_masks = self.get_num_masks(class_labels, device=class_labels[0].device)
        if valid is None:
            mask_losses = self.loss_masks(masks_queries_logits, mask_labels, indices, num_masks)
        else:
            mask_losses = self._valid_loss_masks(masks_queries_logits, mask_labels, indices, num_masks, valid)
        if labelled is None:
            class_losses = self.loss_labels(class_queries_logits, class_labels, indices)
        else:
            class_losses = self._marginal_loss_labels(class_queries_logits, class_labels, indices, labelled)
        losses = {**mask_losses, **class_losses}
        for idx, aux in enumerate(auxiliary_predictions or []):
            aux_losses = self.forward(
                aux["masks_queries_logits"],
                aux["class_queries_logits"],
                mask_labels,
                class_labels,
                valid=valid,
                labelled=labelled,
            )
            losses.update({f"{key}_{idx}": value for key, value in aux_losses.items()})
        return losses

    def _marginal_loss_labels(self, class_queries_logits, class_labels, indices, labelled):
        """HF's weighted class cross-entropy with unlabelled classes free for unmatched queries.

        ``labelled (B, K)``: 1 where the case labels class ``k``. ``partial_class_loss`` ``"exclude"``: an
        unmatched query's softmax leaves the unlabelled classes out; ``"marginal"``: its target is the set
        {no object} ∪ {unlabelled classes}. A matched query's target is its class (module docstring).
        """
        batch_size, num_queries, num_logits = class_queries_logits.shape
        no_object = self.num_labels
        target = torch.full((batch_size, num_queries), no_object, dtype=torch.int64,
                            device=class_queries_logits.device)
        src_idx = self._get_predictions_permutation_indices(indices)
        target[src_idx] = torch.cat([t[j] for t, (_, j) in zip(class_labels, indices)]).to(target.device)
        allowed = torch.zeros(batch_size, num_queries, num_logits, dtype=torch.bool, device=target.device)
        allowed.scatter_(2, target[..., None], True)
        unlabelled = labelled.to(target.device) < 0.5  # (B, K)
        free = torch.zeros_like(allowed)
        free[..., :no_object] = (target == no_object)[..., None] & unlabelled[:, None, :]
        logits = class_queries_logits.float()
        if self.partial_class_loss == "marginal":
            log_p = logits.log_softmax(-1)
            nll = -torch.logsumexp(log_p.masked_fill(~(allowed | free), -math.inf), dim=-1)
        else:  # "exclude": unlabelled classes are not in an unmatched query's softmax
            log_p = logits.masked_fill(free, -math.inf).log_softmax(-1)
            nll = -log_p.gather(-1, target[..., None]).squeeze(-1)
        weight = self.empty_weight.to(target.device)[target]
        return {"loss_cross_entropy": (weight * nll).sum() / weight.sum()}

    def _valid_loss_masks(self, masks_queries_logits, mask_labels, indices, num_masks, valid):
        src_idx = self._get_predictions_permutation_indices(indices)
        tgt_idx = self._get_targets_permutation_indices(indices)
        pred_masks = masks_queries_logits[src_idx][:, None]
        target_masks, _ = self._pad_images_to_max_in_batch(mask_labels)
        target_masks = target_masks[tgt_idx][:, None]
        valid_rows = valid[src_idx[0]]
        with torch.no_grad():
            points = self._sample_valid_points(pred_masks, valid_rows)
            point_labels = sample_point(target_masks, points, align_corners=False).squeeze(1)
            weights = _valid_at(valid_rows, points).float()
        point_logits = sample_point(pred_masks, points, align_corners=False).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
        loss_mask = ((bce * weights).sum(1) / weights.sum(1).clamp(min=1)).sum() / num_masks
        probs = point_logits.sigmoid() * weights
        labels = point_labels * weights
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
        return {"loss_mask": loss_mask, "loss_dice": dice.sum() / num_masks}

    def _sample_valid_points(self, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """HF's ``sample_points_using_uncertainty`` with ignored points never chosen as uncertain."""
        num_boxes = logits.shape[0]
        num_sampled = int(self.num_points * self.oversample_ratio)
        points = torch.rand(num_boxes, num_sampled, 2, device=logits.device)
        uncertainty = self.calculate_uncertainty(sample_point(logits, points, align_corners=False))[:, 0]
        uncertainty = uncertainty.masked_fill(~_valid_at(valid, points), -math.inf)
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        num_random = self.num_points - num_uncertain
        idx = torch.topk(uncertainty, k=num_uncertain, dim=1)[1]
        idx = idx + num_sampled * torch.arange(num_boxes, dtype=torch.long, device=logits.device)[:, None]
        points = points.view(-1, 2)[idx.view(-1), :].view(num_boxes, num_uncertain, 2)
        if num_random > 0:
            points = torch.cat([points, torch.rand(num_boxes, num_random, 2, device=logits.device)], dim=1)
        return points


class Mask2FormerLoss(nn.Module):
    """Mask2Former training loss on label maps, for MONAI's ``SupervisedTrainer`` (``loss_function``).

    Args:
        num_classes: ``K`` foreground classes (label values ``1..K``).
        ignore_index: label value whose pixels do not count in the mask loss; ``None`` for none.
        preset: a key of :data:`~m2f_med.networks.PRESETS`; supplies ``train_num_points`` when that is
            not given (the ``tiny`` preset samples 1024 points, the paper 12544).
        train_num_points: points sampled per mask for the mask losses and the matcher.
        class_weight: weight of the class cross-entropy (paper: 2).
        mask_weight: weight of the mask BCE (paper: 5).
        dice_weight: weight of the mask Dice loss (paper: 5).
        no_object_weight: cross-entropy weight of the "no object" class (paper: 0.1).
        oversample_ratio: candidate points per sampled point for importance sampling (paper: 3).
        importance_sample_ratio: share of points chosen by uncertainty (paper: 0.75).
        use_auxiliary: add the losses of earlier decoder layers (``output.aux_outputs``) when present.
        instance_classes: label values whose connected components are separate targets (lesions).
        partial_class_loss: ``"exclude"`` or ``"marginal"``: how an unmatched query's class loss treats the
            classes a partially labelled case does not label (module docstring).

    Attributes:
        last_losses: the weighted loss terms of the last call (detached), e.g. ``loss_dice`` and
            ``loss_dice_0`` for the first auxiliary layer, for logging.

    Raises:
        ValueError: unknown preset or ``partial_class_loss``, or ``num_classes`` < 1.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        preset: str | None = None,
        train_num_points: int | None = None,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        use_auxiliary: bool = True,
        instance_classes: Sequence[int] = (),
        partial_class_loss: str = "exclude",
    ):
        super().__init__()
        if partial_class_loss not in ("exclude", "marginal"):
            raise ValueError(f"partial_class_loss must be 'exclude' or 'marginal'; got {partial_class_loss!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        if train_num_points is None:
            train_num_points = PRESETS[preset].train_num_points if preset else _PAPER_NUM_POINTS
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.use_auxiliary = bool(use_auxiliary)
        self.instance_classes = tuple(int(v) for v in instance_classes)
        self.weight_dict = {
            "loss_cross_entropy": float(class_weight),
            "loss_mask": float(mask_weight),
            "loss_dice": float(dice_weight),
        }
        with quiet_hf():
            config = Mask2FormerConfig(
                num_labels=self.num_classes,
                no_object_weight=float(no_object_weight),
                class_weight=float(class_weight),
                mask_weight=float(mask_weight),
                dice_weight=float(dice_weight),
                train_num_points=int(train_num_points),
                oversample_ratio=float(oversample_ratio),
                importance_sample_ratio=float(importance_sample_ratio),
            )
        self.criterion = _IgnoreAwareCriterion(config, self.weight_dict, partial_class_loss)
        self.last_losses: dict[str, torch.Tensor] = {}

    def forward(self, output, label: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Compute the total weighted loss of a batch.

        Args:
            output: :class:`~m2f_med.networks.output.Mask2FormerOutput` or a mapping with the same keys
                (``class_logits (B, Q, K + 1)``, ``mask_logits (B, Q, ceil(H / 4), ceil(W / 4))``, optional
                ``aux_outputs``).
            label: ``(B, 1, H, W)`` label map, values ``0..K`` or ``ignore_index`` (float / ``MetaTensor``
                accepted); or, for partially labelled cases, a mapping ``{"label": (B, 1, H, W),
                "labelled": (B, K)}`` (1 where the case labels class ``k``; as built by
                :class:`m2f_med.bundle.PartialLabelBatch`), which makes the class loss marginal over the
                unlabelled classes (module docstring).

        Returns:
            Scalar float32 loss (sum of the weighted terms in :attr:`last_losses`).

        Raises:
            ValueError: missing logits, bad label values, or a label size that does not fit the mask logits.
        """
        labelled = None
        if isinstance(label, Mapping):
            label, labelled = label["label"], label.get("labelled")
            if labelled is not None:
                labelled = torch.as_tensor(labelled).float().reshape(label.shape[0], -1)
                if labelled.shape[1] != self.num_classes:
                    raise ValueError(f"labelled has {labelled.shape[1]} classes; the loss has {self.num_classes}")
                if bool((labelled > 0.5).all()):
                    labelled = None  # every class labelled: HF's loss unchanged
        get = output.get if isinstance(output, Mapping) else lambda key: getattr(output, key, None)
        mask_logits, class_logits, aux_outputs = get("mask_logits"), get("class_logits"), get("aux_outputs")
        if mask_logits is None or class_logits is None:
            raise ValueError("the network output has no mask_logits / class_logits")
        if label.ndim == 3:
            label = label[:, None]
        height, width = int(label.shape[-2]), int(label.shape[-1])
        mask_h, mask_w = math.ceil(height / MASK_STRIDE), math.ceil(width / MASK_STRIDE)
        if tuple(mask_logits.shape[-2:]) != (mask_h, mask_w) or label.shape[0] != mask_logits.shape[0]:
            raise ValueError(
                f"label of shape {tuple(label.shape)} does not fit mask logits {tuple(mask_logits.shape)}: "
                f"expected (B, Q, ceil(H/4), ceil(W/4)) = (…, {mask_h}, {mask_w}) and the same batch size"
            )
        if self.criterion.empty_weight.device != mask_logits.device:
            self.criterion.to(mask_logits.device)  # MONAI's trainers move the network, not the loss
        device_type = mask_logits.device.type
        guard = torch.is_autocast_enabled(device_type)
        context = (
            torch.autocast(device_type=device_type, enabled=False) if guard else contextlib.nullcontext()
        )
        with context:
            targets = label_to_targets(label, self.num_classes, self.ignore_index, self.instance_classes)
            pad = (0, MASK_STRIDE * mask_w - width, 0, MASK_STRIDE * mask_h - height)
            mask_labels = [F.pad(m, pad) for m in targets.mask_labels]
            valid = None if targets.valid is None else F.pad(targets.valid, pad, value=1.0)
            aux = None
            if self.use_auxiliary and aux_outputs:
                aux = [
                    {"masks_queries_logits": m.float(), "class_queries_logits": c.float()}
                    for c, m in aux_outputs
                ]
            losses = self.criterion(
                mask_logits.float(), class_logits.float(), mask_labels, targets.class_labels, aux, valid=valid,
                labelled=labelled,
            )
            for key, weight in self.weight_dict.items():
                for loss_key in losses:
                    if key in loss_key:
                        losses[loss_key] = losses[loss_key] * weight
            total = sum(losses.values())
        self.last_losses = {k: v.detach() for k, v in losses.items()}
        return total
