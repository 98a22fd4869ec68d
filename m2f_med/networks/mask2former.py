"""Mask2Former for 2D / 2.5D medical slices: HF ``Mask2FormerForUniversalSegmentation`` adapted to ``(B, C, H, W)``.

What is HF's (``transformers.models.mask2former``): the backbone, the multi-scale deformable-attention
pixel decoder, the masked-attention transformer decoder, the class head and the weights layout, i.e. every
layer of Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation", CVPR 2022,
Sec. 3. What is ours:

* any ``H``, ``W``: the slice is zero-padded (bottom/right) to a multiple of 32 (the backbone's largest
  stride) and the mask logits are cropped back to ``ceil(H / 4) × ceil(W / 4)``;
* ``C = modalities × (2k + 1)`` input channels really reach the backbone (see :mod:`.config`);
* MONAI ``MetaTensor`` inputs are unwrapped (``.as_tensor()``), outputs are plain tensors in a typed
  :class:`~m2f_med.networks.output.Mask2FormerOutput`;
* mixed precision: under ``torch.autocast`` the backbone and pixel decoder run in reduced precision, the
  transformer decoder (masked attention, its softmax, the query-pixel mask product) and the class head run in
  float32. HF's attention computes ``q·k`` with ``bmm``/``baddbmm`` which overflow in fp16 before the
  softmax (autocast only lifts the softmax itself to fp32, on CUDA), a known NaN source in mask heads;
* the forward composes HF's ``pixel_level_module``, ``transformer_module`` and ``class_predictor`` exactly as
  ``Mask2FormerForUniversalSegmentation.forward`` does, without its loss (see :mod:`.loss`), so the weights
  (``hf_model.*``) stay HF-compatible (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

from .config import build_config, quiet_hf
from .output import Mask2FormerOutput

__all__ = ["Mask2FormerNet", "SIZE_DIVISOR", "MASK_STRIDE"]

SIZE_DIVISOR = 32  # stride of the coarsest backbone stage (1/32)
MASK_STRIDE = 4  # mask logits live at 1/4 of the input resolution (paper Sec. 3.1)


class Mask2FormerNet(nn.Module):
    """Mask2Former on slices: ``(B, C, H, W)`` → per-query class logits and 1/4-resolution mask logits.

    Usable from a MONAI bundle (``_target_: m2f_med.networks.Mask2FormerNet`` with ``preset``,
    ``in_channels``, ``num_classes``, ``num_queries``) and as ``network_def`` of a MONAI trainer; for
    sliding-window inference wrap it in :class:`~m2f_med.networks.SemanticProbabilities`.

    Args:
        preset: a key of :data:`~m2f_med.networks.PRESETS` (``"tiny"``, ``"swin_t"``, ``"resnet50"``).
        in_channels: ``C`` = modalities × (2k + 1) (k neighbouring slices on each side; k = 0 is plain 2D).
        num_classes: ``K`` foreground classes; label value ``v`` in ``1..K`` is class index ``v - 1``.
        num_queries: ``Q``; ``None`` keeps the preset's value.
        config: a ready ``transformers.Mask2FormerConfig`` (e.g. from a checkpoint); overrides the previous
            four arguments (``C`` is read from ``config.backbone_config.num_channels``, ``K`` from
            ``config.num_labels``, ``Q`` from ``config.num_queries``).
        fp32_decoder: keep the transformer decoder and class head in float32 under autocast.
        pad_value: value of the padding added to reach a multiple of 32 (0 fits inputs scaled to [0, 1]).

    Raises:
        ValueError: unknown preset or counts below 1 (from :func:`~m2f_med.networks.build_config`).

    Example:
        >>> net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=4)
        >>> out = net(torch.rand(2, 3, 250, 190))
        >>> out.class_logits.shape, out.mask_logits.shape
        (torch.Size([2, 16, 5]), torch.Size([2, 16, 63, 48]))
    """

    def __init__(
        self,
        preset: str = "tiny",
        in_channels: int = 3,
        num_classes: int = 1,
        num_queries: int | None = None,
        *,
        config: Mask2FormerConfig | None = None,
        fp32_decoder: bool = True,
        pad_value: float = 0.0,
    ):
        super().__init__()
        self.preset = preset if config is None else None
        if config is None:
            config = build_config(preset, in_channels, num_classes, num_queries)
        with quiet_hf():
            self.hf_model = Mask2FormerForUniversalSegmentation(config)
        self.in_channels = int(config.backbone_config.num_channels)
        self.num_classes = int(config.num_labels)
        self.num_queries = int(config.num_queries)
        self.fp32_decoder = bool(fp32_decoder)
        self.pad_value = float(pad_value)

    @property
    def config(self) -> Mask2FormerConfig:
        """The HF ``Mask2FormerConfig`` of the wrapped model."""
        return self.hf_model.config

    def forward(self, x: torch.Tensor) -> Mask2FormerOutput:
        """Run Mask2Former on a batch of slices.

        Args:
            x: ``(B, C, H, W)`` float image slices (``torch.Tensor`` or MONAI ``MetaTensor``), any ``H``, ``W``.

        Returns:
            :class:`~m2f_med.networks.output.Mask2FormerOutput` with ``class_logits (B, Q, K + 1)``,
            ``mask_logits (B, Q, ceil(H / 4), ceil(W / 4))`` and, in training mode, ``aux_outputs`` (one
            ``(class_logits, mask_logits)`` pair per earlier decoder layer). Class and mask logits are
            float32 (the decoder runs in float32 under autocast unless ``fp32_decoder=False``).

        Raises:
            ValueError: ``x`` is not 4-D or has a channel count other than ``in_channels``.
        """
        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        if x.ndim != 4:
            raise ValueError(f"expected slices of shape (B, C, H, W); got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels (modalities x (2k + 1) slices); got {x.shape[1]}"
            )
        height, width = int(x.shape[-2]), int(x.shape[-1])
        weight_dtype = next(self.parameters()).dtype
        if x.dtype != weight_dtype:
            x = x.to(weight_dtype)
        pad_h = -height % SIZE_DIVISOR
        pad_w = -width % SIZE_DIVISOR
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_value)

        hf = self.hf_model
        pixel = hf.model.pixel_level_module(pixel_values=x, output_hidden_states=False)
        multi_scale = pixel.decoder_hidden_states
        mask_features = pixel.decoder_last_hidden_state
        device_type = x.device.type
        guard = self.fp32_decoder and torch.is_autocast_enabled(device_type)
        context = (
            torch.autocast(device_type=device_type, enabled=False) if guard else contextlib.nullcontext()
        )
        with context:
            if guard:
                multi_scale = tuple(f.float() for f in multi_scale)
                mask_features = mask_features.float()
            decoder = hf.model.transformer_module(
                multi_scale_features=multi_scale, mask_features=mask_features, output_hidden_states=True
            )
            # one class prediction per decoder layer (HF: intermediate hidden states with layer norm applied)
            states = (
                decoder.intermediate_hidden_states
                if self.training
                else decoder.intermediate_hidden_states[-1:]
            )
            class_logits = [hf.class_predictor(s.transpose(0, 1)) for s in states]
        mask_h, mask_w = math.ceil(height / MASK_STRIDE), math.ceil(width / MASK_STRIDE)
        masks = decoder.masks_queries_logits if self.training else decoder.masks_queries_logits[-1:]
        masks = [m[..., :mask_h, :mask_w] for m in masks]
        aux = list(zip(class_logits[:-1], masks[:-1])) if self.training else None
        return Mask2FormerOutput(class_logits=class_logits[-1], mask_logits=masks[-1], aux_outputs=aux)
