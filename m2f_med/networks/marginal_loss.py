"""Marginal Dice + cross-entropy for per-pixel (UNet-style) networks on partially labelled cases.

Shi et al. 2021, Sec. 3.2 (marginal loss): when a case labels only some classes, the probabilities of the
classes it does not label are merged into background before the loss, so predicting such a class where the
case says "background" costs nothing, while the labelled classes are learnt as usual. Here: softmax over
``K + 1`` channels, the unlabelled channels are added to channel 0 and set to 0, then cross-entropy on the
log of the merged distribution and a soft Dice (MONAI ``DiceLoss``, background included) on it. With every
class labelled this is MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)``.

Reference: Shi G., Xiao L., Chen Y., Zhou S.K. Marginal loss and exclusion loss for partially supervised
multi-organ segmentation. Medical Image Analysis 70, 2021, 101979. https://doi.org/10.1016/j.media.2021.101979
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

__all__ = ["MarginalDiceCELoss"]


class MarginalDiceCELoss(nn.Module):
    """Dice + CE on logits ``(B, K + 1, H, W)`` with classes a case does not label merged into background.

    Args:
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        smooth: Dice smoothing (numerator and denominator), as MONAI's default.
        batch: Dice over the whole batch per class (MONAI ``DiceLoss(batch=True)``) rather than per sample.

    Call:
        ``loss(logits, label)`` with ``label`` a ``(B, 1, H, W)`` map of values ``0..K`` (all classes
        labelled), or ``{"label": (B, 1, H, W), "labelled": (B, K)}`` (1 where the case labels class ``k``;
        :class:`m2f_med.bundle.PartialLabelBatch` builds it). Returns a scalar.

    Raises:
        ValueError: ``labelled`` does not have ``K`` columns.
    """

    def __init__(
        self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth: float = 1e-5, batch: bool = False
    ) -> None:
        super().__init__()
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)
        self.dice = DiceLoss(include_background=True, to_onehot_y=False, softmax=False,
                             smooth_nr=smooth, smooth_dr=smooth, batch=batch)

    def forward(self, logits: torch.Tensor, label: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        labelled = None
        if isinstance(label, Mapping):
            label, labelled = label["label"], label.get("labelled")
        logits = torch.as_tensor(logits).float()
        num_logits = logits.shape[1]
        prob = logits.softmax(1)
        if labelled is not None:
            labelled = torch.as_tensor(labelled).to(prob).reshape(prob.shape[0], -1)
            if labelled.shape[1] != num_logits - 1:
                raise ValueError(f"labelled has {labelled.shape[1]} classes; the logits have {num_logits - 1}")
            keep = torch.cat([torch.ones_like(labelled[:, :1]), labelled], 1)[..., None, None]  # (B, K+1, 1, 1)
            merged_bg = (prob * (1 - keep)).sum(1, keepdim=True)
            prob = prob * keep
            prob = torch.cat([prob[:, :1] + merged_bg, prob[:, 1:]], 1)
        target = torch.as_tensor(label).long()
        if target.ndim == prob.ndim:
            target = target[:, 0]
        onehot = F.one_hot(target, num_logits).movedim(-1, 1).to(prob)
        ce = F.nll_loss(prob.clamp_min(1e-8).log(), target)
        return self.lambda_dice * self.dice(prob, onehot) + self.lambda_ce * ce
