"""The typed output of :class:`~m2f_med.networks.Mask2FormerNet`.

It subclasses HF's ``transformers.utils.ModelOutput`` (a dataclass that is also an ordered mapping and a
registered pytree node), so it survives MONAI's engines: ``SupervisedTrainer`` stores it as
``engine.state.output["pred"]``, hands it to the loss, and ``decollate_batch`` splits a mapping into one
dict per image (``{"class_logits": (Q, K + 1), "mask_logits": (Q, h, w), ...}``), which
:func:`~m2f_med.networks.semantic_probabilities` also accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

__all__ = ["Mask2FormerOutput"]


@dataclass
class Mask2FormerOutput(ModelOutput):
    """Per-query class and mask predictions of Mask2Former (paper Sec. 3, "mask classification").

    Attributes:
        class_logits: ``(B, Q, K + 1)`` float32 class logits; the last column is "no object" (∅).
        mask_logits: ``(B, Q, ceil(H / 4), ceil(W / 4))`` float32 mask logits at 1/4 of the input
            resolution (cell ``(i, j)`` covers input pixels ``4i .. 4i + 3``; see
            :func:`~m2f_med.networks.semantic_probabilities` for the exact upsampling).
        aux_outputs: in training mode, a list of ``(class_logits, mask_logits)`` pairs (same shapes), one
            per earlier decoder layer, for the auxiliary losses (paper Sec. 3.2); ``None`` in eval mode.
    """

    class_logits: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    aux_outputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def to(self, *args, **kwargs) -> Mask2FormerOutput:
        """Return a copy with every tensor moved/cast like ``torch.Tensor.to(*args, **kwargs)``."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Mask2FormerOutput:
        """Return a copy with every tensor detached from the autograd graph."""
        return self._map(torch.Tensor.detach)

    def _map(self, fn) -> Mask2FormerOutput:
        aux = None if self.aux_outputs is None else [(fn(c), fn(m)) for c, m in self.aux_outputs]
        return Mask2FormerOutput(
            class_logits=fn(self.class_logits), mask_logits=fn(self.mask_logits), aux_outputs=aux
        )
