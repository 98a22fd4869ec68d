"""From per-query predictions to pixels: semantic probabilities and instances, at full resolution.

Our code, following the inference rules of Mask2Former (Cheng et al., CVPR 2022, Sec. 4 "inference", which
reuses MaskFormer's, Cheng et al., NeurIPS 2021, Sec. 3.4). HF's image processor is not used: it needs
torchvision and resizes to 384 before post-processing.

Resolution: mask logits are at 1/4 of the slice, ``h = ceil(H / 4)``; cell ``i`` covers pixels
``4i .. 4i + 3``. To size ``(H, W)`` they are upsampled bilinearly by exactly 4 (``align_corners=False``) to
``(4h, 4w)`` and cropped to ``(H, W)``, so the grid stays aligned with the network's bottom/right padding.
Any other target size is reached by a plain bilinear resize. Logits are upsampled before the sigmoid (as in
the paper's code and HF), which keeps boundaries sharper than upsampling probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from .mask2former import MASK_STRIDE

__all__ = [
    "semantic_probabilities",
    "SemanticProbabilities",
    "instance_predictions",
    "InstancePrediction",
    "upsample_mask_logits",
]

_QUERY_CHUNK = 16


def _logits(output) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Class and mask logits of a (possibly decollated, unbatched) output, batched, and whether it was."""
    if isinstance(output, Mapping) or hasattr(output, "class_logits"):
        get = output.get if isinstance(output, Mapping) else lambda k: getattr(output, k)
        class_logits, mask_logits = get("class_logits"), get("mask_logits")
    else:
        raise TypeError(
            f"expected a Mask2FormerOutput or a mapping with class/mask logits; got {type(output)}"
        )
    if class_logits is None or mask_logits is None:
        raise ValueError("the output has no class_logits or mask_logits")
    batched = class_logits.ndim == 3
    if not batched:
        class_logits, mask_logits = class_logits[None], mask_logits[None]
    if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"class logits (B, Q, K + 1) and mask logits (B, Q, h, w) do not match: "
            f"{tuple(class_logits.shape)} vs {tuple(mask_logits.shape)}"
        )
    return class_logits.float(), mask_logits.float(), batched


def upsample_mask_logits(mask_logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Upsample 1/4-resolution mask logits to the slice size, keeping the grid aligned (module docstring).

    Args:
        mask_logits: ``(B, Q, h, w)`` mask logits.
        size: ``(H, W)`` in pixels. If ``ceil(H / 4) == h`` and ``ceil(W / 4) == w`` the logits are scaled
            by exactly 4 and cropped; otherwise they are resized to ``(H, W)``.

    Returns:
        ``(B, Q, H, W)`` mask logits.
    """
    height, width = int(size[0]), int(size[1])
    h, w = mask_logits.shape[-2:]
    if math.ceil(height / MASK_STRIDE) == h and math.ceil(width / MASK_STRIDE) == w:
        up = F.interpolate(
            mask_logits, size=(h * MASK_STRIDE, w * MASK_STRIDE), mode="bilinear", align_corners=False
        )
        return up[..., :height, :width]
    return F.interpolate(mask_logits, size=(height, width), mode="bilinear", align_corners=False)


def semantic_probabilities(output, size: Sequence[int]) -> torch.Tensor:
    """Per-pixel foreground class probabilities from query predictions (paper Sec. 4, semantic inference).

    ``P[b, k] = sum_q softmax(class_logits[b, q])[k] * sigmoid(mask_logits[b, q])`` for the ``K`` foreground
    classes (the "no object" column is dropped), then divided by ``max(1, sum_k P[b, k])`` per pixel: the
    paper only takes an argmax, but a background probability ``1 - sum_k P`` needs ``sum_k P <= 1``, which
    overlapping queries can break. Where the sum is already ≤ 1 the values are the paper's.

    Args:
        output: a :class:`~m2f_med.networks.output.Mask2FormerOutput`, or a mapping with ``class_logits``
            ``(B, Q, K + 1)`` and ``mask_logits`` ``(B, Q, h, w)``; unbatched ``(Q, K + 1)`` /
            ``(Q, h, w)`` (one item of MONAI's ``decollate_batch``) is accepted too.
        size: ``(H, W)`` of the input slice in pixels.

    Returns:
        ``(B, K, H, W)`` float32 probabilities in ``[0, 1]`` whose per-pixel sum is ≤ 1 (``(K, H, W)`` for an
        unbatched input).

    Raises:
        TypeError / ValueError: the output has no class/mask logits or their shapes disagree.
    """
    class_logits, mask_logits, batched = _logits(output)
    class_probs = class_logits.softmax(-1)[..., :-1]
    # queries in chunks: the full (B, Q, H, W) upsampled stack is ~840 MB for B = 8, Q = 100 at 512²
    probs = None
    for start in range(0, class_probs.shape[1], _QUERY_CHUNK):
        part = slice(start, start + _QUERY_CHUNK)
        mask_probs = upsample_mask_logits(mask_logits[:, part], size).sigmoid()
        term = torch.einsum("bqk,bqhw->bkhw", class_probs[:, part], mask_probs)
        probs = term if probs is None else probs + term
    probs = probs / probs.sum(1, keepdim=True).clamp(min=1.0)
    return probs if batched else probs[0]


class SemanticProbabilities(nn.Module):
    """Wrap a :class:`~m2f_med.networks.Mask2FormerNet` into a dense ``(B, K + 1, H, W)`` probability model.

    This is what MONAI's ``SliceInferer`` / ``SlidingWindowInferer`` calls: channel 0 is background
    ``1 - sum_k P_k``, channels ``1..K`` are :func:`semantic_probabilities`, so ``argmax`` over channels
    gives the label map directly (label value ``v`` = class ``v``). Ours.

    Args:
        network: a module returning a Mask2Former output for ``(B, C, H, W)`` input.

    Attributes:
        num_classes: ``K`` (from ``network.num_classes``).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.num_classes = getattr(network, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class probabilities of a batch of slices.

        Args:
            x: ``(B, C, H, W)`` slices (tensor or ``MetaTensor``).

        Returns:
            ``(B, K + 1, H, W)`` float32 plain tensor; channel 0 = background; channels sum to 1.
        """
        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        foreground = semantic_probabilities(self.network(x), size=x.shape[-2:])
        background = (1.0 - foreground.sum(1, keepdim=True)).clamp(min=0.0)
        return torch.cat([background, foreground], dim=1)


@dataclass
class InstancePrediction:
    """Instances found in one slice.

    Attributes:
        masks: ``(N, H, W)`` bool masks.
        labels: ``(N,)`` int64 label values ``1..K``.
        scores: ``(N,)`` float32 confidence in ``[0, 1]``: class probability × mean mask probability inside
            the mask.
    """

    masks: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def instance_predictions(
    output,
    size: Sequence[int],
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    top_k: int | None = None,
) -> list[InstancePrediction]:
    """Instances (e.g. several lesions of one class) with confidence scores, per slice.

    Follows the paper's instance inference (Mask2Former Sec. 4; detectron2 ``instance_inference``): the
    ``Q × K`` query/class scores ``softmax(class_logits)[:, :K]`` are ranked, the ``top_k`` best are kept,
    each mask is ``sigmoid(mask logits) > mask_threshold`` and its score is the class score times the mean
    mask probability inside the mask. Ours: full-resolution masks, a score threshold, empty masks dropped.
    Instances may overlap (one query can appear with two classes); resolve overlaps downstream if needed.

    Args:
        output: as for :func:`semantic_probabilities`.
        size: ``(H, W)`` of the slice in pixels.
        score_threshold: keep instances with score ≥ this.
        mask_threshold: probability above which a pixel belongs to a mask.
        top_k: number of query/class pairs ranked before thresholding; ``None`` = ``Q``.

    Returns:
        One :class:`InstancePrediction` per slice, instances sorted by decreasing score.

    Raises:
        TypeError / ValueError: as for :func:`semantic_probabilities`.
    """
    class_logits, mask_logits, _ = _logits(output)
    num_queries, num_classes = class_logits.shape[1], class_logits.shape[2] - 1
    top_k = num_queries if top_k is None else max(1, min(int(top_k), num_queries * num_classes))
    height, width = int(size[0]), int(size[1])
    results = []
    for b in range(class_logits.shape[0]):
        scores = class_logits[b].softmax(-1)[:, :-1].flatten()  # (Q * K,), query-major
        top_scores, top_index = scores.topk(top_k)
        queries = top_index // num_classes
        labels = top_index % num_classes + 1
        mask_probs = upsample_mask_logits(mask_logits[b, queries][None], (height, width))[0].sigmoid()
        masks = mask_probs > mask_threshold
        area = masks.flatten(1).sum(1)
        mask_scores = (mask_probs * masks).flatten(1).sum(1) / area.clamp(min=1)
        final = top_scores * mask_scores
        keep = (final >= score_threshold) & (area > 0)
        order = final[keep].argsort(descending=True)
        results.append(
            InstancePrediction(
                masks=masks[keep][order], labels=labels[keep][order].long(), scores=final[keep][order].float()
            )
        )
    return results
