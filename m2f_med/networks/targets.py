"""Label maps → Mask2Former targets: one binary mask and one class index per object, per slice.

Label convention of m2f-med: value ``v`` in ``1..K`` is class index ``v - 1``; background ``0`` is never a
target (it is what unmatched queries predict as "no object"); ``ignore_index`` marks pixels that must not
count. By default each class present in a slice is one target (semantic segmentation, paper Sec. 4); for
classes named in ``instance_classes`` every connected component is its own target (several lesions of one
class), found with ``scipy.ndimage.label`` (8-connectivity in the slice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

__all__ = ["SliceTargets", "label_to_targets"]

_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)


@dataclass
class SliceTargets:
    """Targets of a batch of slices, in the form HF's ``Mask2FormerLoss`` takes.

    Attributes:
        mask_labels: ``B`` float32 tensors of shape ``(N_b, H, W)`` with values 0/1 (``(0, H, W)`` for a
            slice without foreground: HF needs exactly that form, see FACTS.md).
        class_labels: ``B`` int64 tensors of shape ``(N_b,)``, class indices ``0..K-1``.
        valid: ``(B, 1, H, W)`` float32, 1 where a pixel counts and 0 at ``ignore_index``; ``None`` when no
            pixel of the batch is ignored.
    """

    mask_labels: list[torch.Tensor]
    class_labels: list[torch.Tensor]
    valid: torch.Tensor | None


def label_to_targets(
    label: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    instance_classes: Sequence[int] = (),
) -> SliceTargets:
    """Turn a batch of label maps into per-slice mask/class targets.

    Args:
        label: ``(B, 1, H, W)`` or ``(B, H, W)`` integer-valued label map (float and MONAI ``MetaTensor``
            accepted, as MONAI delivers them); values in ``0..K`` or ``ignore_index``.
        num_classes: ``K``.
        ignore_index: label value excluded from the loss; ``None`` for none.
        instance_classes: label values (``1..K``) whose connected components become separate targets.

    Returns:
        :class:`SliceTargets` on the label's device. Ignored pixels are 0 in every mask.

    Raises:
        ValueError: wrong shape, non-integer values, or values outside ``0..K`` and ``ignore_index``
            (the message lists them).
    """
    if isinstance(label, MetaTensor):
        label = label.as_tensor()
    if label.ndim == 4:
        if label.shape[1] != 1:
            raise ValueError(f"expected a label map of shape (B, 1, H, W); got {tuple(label.shape)}")
        label = label[:, 0]
    if label.ndim != 3:
        raise ValueError(f"expected a label map of shape (B, 1, H, W) or (B, H, W); got {tuple(label.shape)}")
    if label.is_floating_point():
        rounded = label.round()
        if not torch.equal(rounded, label):
            raise ValueError("label map has non-integer values; resample labels with nearest-neighbour")
        label = rounded
    label = label.long()
    allowed = set(range(num_classes + 1)) | ({int(ignore_index)} if ignore_index is not None else set())
    present = [int(v) for v in torch.unique(label).tolist()]
    bad = sorted(set(present) - allowed)
    if bad:
        raise ValueError(
            f"label values {bad[:10]} are outside 0..{num_classes}"
            + (f" and ignore_index {ignore_index}" if ignore_index is not None else "")
        )
    instance_set = {int(v) for v in instance_classes}
    ignored = label == ignore_index if ignore_index is not None else None
    valid = None
    if ignored is not None and bool(ignored.any()):
        valid = (~ignored).float()[:, None]
    mask_labels, class_labels = [], []
    for b in range(label.shape[0]):
        masks, classes = [], []
        values = [v for v in torch.unique(label[b]).tolist() if 1 <= v <= num_classes]
        for v in values:
            binary = label[b] == v
            if v in instance_set:
                components, count = ndimage.label(binary.cpu().numpy(), structure=_EIGHT_CONNECTED)
                comp = torch.from_numpy(components.astype(np.int64)).to(label.device)
                masks.extend(comp == i for i in range(1, count + 1))
                classes.extend([v - 1] * count)
            else:
                masks.append(binary)
                classes.append(v - 1)
        height, width = label.shape[-2:]
        if masks:
            mask_labels.append(torch.stack(masks).float())
        else:
            mask_labels.append(torch.zeros(0, height, width, device=label.device))
        class_labels.append(torch.tensor(classes, dtype=torch.long, device=label.device))
    return SliceTargets(mask_labels=mask_labels, class_labels=class_labels, valid=valid)
