"""Named Mask2Former presets, built from explicit HF configs without any download.

Every preset is a plain description (:class:`Preset`) turned into a ``transformers.Mask2FormerConfig`` by
:func:`build_config`. No hub name and no timm backbone is used: ``Mask2FormerConfig(backbone="resnet18")`` or
``use_timm_backbone=True`` would try the network. The number of input channels is set on the *backbone*
config (``ResNetConfig.num_channels`` / ``SwinConfig.num_channels``), because
``Mask2FormerConfig(num_channels=...)`` is silently ignored by HF.

Presets:

* ``tiny``: a small basic-block ResNet (stages 32/64/128/256 channels, one block each), hidden size 64,
  2 pixel-decoder (deformable attention) layers, 3 masked-attention decoder layers, 16 queries,
  1024 sampled points in the loss: about 1.6 M parameters, trains on 2 CPU cores.
* ``swin_t``: the Swin-T backbone and Mask2Former decoder of the paper (Cheng et al., CVPR 2022, Sec. 4:
  6 pixel-decoder layers, 9 decoder layers, 100 queries, hidden 256, 12544 points); its shapes match HF's
  ``facebook/mask2former-swin-tiny-*`` checkpoints, so they can be transferred (:mod:`.pretrained`).
* ``resnet50``: the ResNet-50 variant of the paper with the same decoder. For GPU.

What is HF's: the config classes and every module they build. What is ours: the preset values and the
guarantee that channels reach the backbone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from transformers import Mask2FormerConfig, ResNetConfig, SwinConfig
from transformers.utils import logging as hf_logging

__all__ = ["Preset", "PRESETS", "build_config", "quiet_hf"]

_STAGES = ["stage1", "stage2", "stage3", "stage4"]


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """Silence HF's logger and progress bars inside the block.

    HF warns that a ResNet backbone "is not a supported model" for Mask2Former; it works (FACTS.md), and
    the warning would reach every user of the ``tiny`` and ``resnet50`` presets.
    """
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class Preset:
    """A named network size: backbone family and keyword arguments for the HF configs.

    Args:
        backbone: ``"resnet"`` (``transformers.ResNetConfig``) or ``"swin"`` (``transformers.SwinConfig``).
        backbone_kwargs: keyword arguments of the backbone config, without ``num_channels`` and
            ``out_features`` (set by :func:`build_config`).
        mask2former_kwargs: keyword arguments of ``transformers.Mask2FormerConfig``, without ``num_labels``
            and ``backbone_config``. ``num_queries`` is the preset's default number of queries.
        description: one line for humans (``m2f-med`` CLI, benchmarks).
    """

    backbone: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    mask2former_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def num_queries(self) -> int:
        """Default number of queries ``Q`` of this preset."""
        return int(self.mask2former_kwargs.get("num_queries", 100))

    @property
    def train_num_points(self) -> int:
        """Points sampled per mask in the loss (paper Sec. 3.2 "improving training efficiency")."""
        return int(self.mask2former_kwargs.get("train_num_points", 12544))


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        backbone="resnet",
        backbone_kwargs={
            "embedding_size": 32,
            "hidden_sizes": [32, 64, 128, 256],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
        },
        mask2former_kwargs={
            "feature_size": 64,  # GroupNorm(32, feature_size) in HF's pixel decoder: a multiple of 32
            "mask_feature_size": 64,
            "hidden_dim": 64,
            "encoder_feedforward_dim": 256,
            "dim_feedforward": 256,
            "encoder_layers": 2,
            "decoder_layers": 4,  # HF builds decoder_layers - 1 layers: one per feature level
            "num_attention_heads": 4,
            "num_queries": 16,
            "train_num_points": 1024,  # the loss dominates on CPU (FACTS.md); masks here are small
        },
        description="ResNet (32-256 ch, 1 block/stage), hidden 64, 2+3 layers, 16 queries; ~1.6 M params, CPU",
    ),
    "swin_t": Preset(
        backbone="swin",
        backbone_kwargs={
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "drop_path_rate": 0.3,
        },
        mask2former_kwargs={"num_queries": 100, "train_num_points": 12544},
        description="Swin-T backbone + paper decoder (6+9 layers, 100 queries, hidden 256); ~47 M params, GPU",
    ),
    "resnet50": Preset(
        backbone="resnet",
        backbone_kwargs={
            "embedding_size": 64,
            "hidden_sizes": [256, 512, 1024, 2048],
            "depths": [3, 4, 6, 3],
            "layer_type": "bottleneck",
        },
        mask2former_kwargs={"num_queries": 100, "train_num_points": 12544},
        description="ResNet-50 backbone + paper decoder (6+9 layers, 100 queries, hidden 256); ~44 M params, GPU",
    ),
}


def build_config(
    preset: str = "tiny",
    in_channels: int = 3,
    num_classes: int = 1,
    num_queries: int | None = None,
    **overrides: Any,
) -> Mask2FormerConfig:
    """Build the HF ``Mask2FormerConfig`` of a preset for ``C`` input channels and ``K`` classes.

    Args:
        preset: a key of :data:`PRESETS` (``"tiny"``, ``"swin_t"``, ``"resnet50"``).
        in_channels: ``C`` = modalities × (2k + 1) slices; set on the backbone config so it reaches the
            first convolution / patch embedding.
        num_classes: ``K``, foreground classes (background is not a class; HF adds "no object").
        num_queries: ``Q``; ``None`` keeps the preset's value.
        **overrides: further ``Mask2FormerConfig`` fields (e.g. ``decoder_layers=7``).

    Returns:
        A ``transformers.Mask2FormerConfig`` with ``num_labels = K`` and the backbone config set.

    Raises:
        ValueError: unknown preset, or a count below 1. Values are converted to ``int`` first because HF
            configs are strictly typed (``numpy.int64`` raises).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    spec = PRESETS[preset]
    in_channels, num_classes = int(in_channels), int(num_classes)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1; got {in_channels}")
    if num_classes < 1:
        raise ValueError(
            f"num_classes must be >= 1 (foreground classes, background excluded); got {num_classes}"
        )
    backbone_cls = {"resnet": ResNetConfig, "swin": SwinConfig}[spec.backbone]
    backbone = backbone_cls(num_channels=in_channels, out_features=list(_STAGES), **spec.backbone_kwargs)
    kwargs = dict(spec.mask2former_kwargs)
    if num_queries is not None:
        if int(num_queries) < 1:
            raise ValueError(f"num_queries must be >= 1; got {num_queries}")
        kwargs["num_queries"] = int(num_queries)
    kwargs.update(overrides)
    with quiet_hf():
        return Mask2FormerConfig(backbone_config=backbone, num_labels=num_classes, **kwargs)
