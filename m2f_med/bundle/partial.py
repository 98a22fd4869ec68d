"""Batches for partial-label training: the label map together with the classes each case labels.

MONAI's ``SupervisedTrainer`` hands the loss ``(prediction, label)``. For partially labelled cases the loss
also needs which classes each case labels (``labelled``, written by
:class:`m2f_med.bundle.RemapLabelsByNamed` with ``labelled_key``), so this ``prepare_batch`` returns the label
as ``{"label": (B, 1, H, W), "labelled": (B, K)}``; :class:`m2f_med.networks.Mask2FormerLoss` and
:class:`m2f_med.networks.MarginalDiceCELoss` accept that form (marginal loss, Shi et al. 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch

__all__ = ["PartialLabelBatch"]


class PartialLabelBatch(PrepareBatch):
    """``prepare_batch`` for ``SupervisedTrainer``: ``(image, {"label", "labelled"})`` when the batch has them.

    Args:
        labelled_key: the batch key with the ``(B, K)`` labelled-class flags.

    Returns (from ``__call__``):
        ``(image, label)`` as MONAI's ``default_prepare_batch`` when the batch has no ``labelled_key``, else
        ``(image, {"label": label, "labelled": labelled})``, all on ``device``.
    """

    def __init__(self, labelled_key: str = "labelled") -> None:
        self.labelled_key = labelled_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        image, label = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        labelled = batchdata.get(self.labelled_key) if isinstance(batchdata, Mapping) else None
        if labelled is None:
            return image, label
        labelled = torch.as_tensor(labelled).float().to(device=device, non_blocking=non_blocking)
        return image, {"label": label, "labelled": labelled}
