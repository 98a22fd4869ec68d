"""Mask2Former (HF ``transformers``) adapted to ``(B, C, H, W)`` CT/MRI slices: network, loss, outputs.

Public API (see each module for shapes, paper sections, and what is HF's and what is ours):

* :class:`Mask2FormerNet`, :class:`Mask2FormerOutput`, :data:`PRESETS`, :func:`build_config`
* :class:`Mask2FormerLoss`, :func:`label_to_targets`
* :func:`semantic_probabilities`, :class:`SemanticProbabilities`, :func:`instance_predictions`
* :func:`load_pretrained`, :func:`transfer_weights` (local HF checkpoints, 3 → C channel inflation)
* :func:`export_semantic`, :func:`save_exported`, :func:`export_onnx`
"""

from .config import PRESETS, Preset, build_config
from .export import export_onnx, export_semantic, load_exported, save_exported
from .loss import Mask2FormerLoss
from .marginal_loss import MarginalDiceCELoss
from .mask2former import Mask2FormerNet
from .output import Mask2FormerOutput
from .postprocess import (
    InstancePrediction,
    SemanticProbabilities,
    instance_predictions,
    semantic_probabilities,
    upsample_mask_logits,
)
from .pretrained import TransferReport, load_pretrained, transfer_weights
from .targets import SliceTargets, label_to_targets
from .volume_probabilities import VolumeProbabilities, slice_network

__all__ = [
    "MarginalDiceCELoss",
    "PRESETS",
    "Preset",
    "build_config",
    "Mask2FormerNet",
    "Mask2FormerOutput",
    "Mask2FormerLoss",
    "SliceTargets",
    "label_to_targets",
    "semantic_probabilities",
    "SemanticProbabilities",
    "instance_predictions",
    "InstancePrediction",
    "upsample_mask_logits",
    "load_pretrained",
    "transfer_weights",
    "TransferReport",
    "export_semantic",
    "save_exported",
    "load_exported",
    "export_onnx",
    "VolumeProbabilities",
    "slice_network",
]
