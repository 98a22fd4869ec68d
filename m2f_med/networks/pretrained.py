"""Transfer learning from a local HF Mask2Former checkpoint (e.g. a COCO/ADE20K Swin-T one) to C-channel slices.

The checkpoint folder (``config.json`` + ``model.safetensors``, as written by ``save_pretrained``) is read
with HF's ``Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True)``: nothing is
downloaded. Then, ours:

* every weight whose name and shape match is copied;
* the first convolution / patch embedding of the backbone is *inflated* from 3 (RGB) to ``C`` input
  channels, following timm's ``adapt_input_conv`` (a grey image seen as ``(x, x, x)`` gives the RGB
  filters' sum ``W_r + W_g + W_b``):

  - ``"centre"`` (default): the RGB sum goes to the centre-slice channel of each modality
    (channel ``m · (2k + 1) + k``, the 2.5D channel order of ``m2f_med.transforms.SliceStack``), divided by
    the number of modalities; the neighbour slices start at zero, so at step 0 the network sees exactly the
    2D centre slice and learns how to use the neighbours;
  - ``"spread"``: every channel gets ``(W_r + W_g + W_b) / C``, so a volume that is constant across slices
    gives the same response as the RGB model;

* the class head (``class_predictor``, ``K + 1`` outputs) and the loss's ``empty_weight`` are re-initialised
  when ``K`` differs (or on request); query embeddings are re-initialised when ``Q`` differs;
* a :class:`TransferReport` lists what was loaded, inflated, new and unused.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Mask2FormerForUniversalSegmentation

from m2f_med.io.errors import VolumeError

from .config import quiet_hf
from .mask2former import Mask2FormerNet

__all__ = ["TransferReport", "load_pretrained", "transfer_weights", "inflate_input_weight"]

log = logging.getLogger(__name__)

_CLASS_HEAD = ("class_predictor.", "criterion.empty_weight")
_INFLATE_MODES = ("centre", "spread")


@dataclass
class TransferReport:
    """What a weight transfer did, by parameter/buffer name (HF names, e.g. ``class_predictor.weight``).

    Attributes:
        checkpoint: the checkpoint folder.
        loaded: copied unchanged.
        inflated: first convolution adapted from 3 to ``C`` input channels.
        new: kept at their fresh initialisation (class head, changed query count, or a shape that differs).
        unused: in the checkpoint but not in the network.
    """

    checkpoint: str
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts of loaded / inflated / new / unused tensors, and the new ones by name."""
        text = (
            f"{len(self.loaded)} loaded, {len(self.inflated)} inflated, {len(self.new)} new, "
            f"{len(self.unused)} unused"
        )
        return text + (f"; new: {', '.join(self.new)}" if self.new else "")


def inflate_input_weight(
    weight: torch.Tensor, in_channels: int, mode: str = "centre", num_modalities: int = 1
) -> torch.Tensor:
    """Adapt an RGB first-layer weight to ``C`` input channels (module docstring; timm ``adapt_input_conv``).

    Args:
        weight: ``(O, 3, kh, kw)`` weight of the first convolution / patch embedding.
        in_channels: ``C`` = ``num_modalities`` × (2k + 1).
        mode: ``"centre"`` or ``"spread"``.
        num_modalities: number of modalities ``M`` stacked modality-major in the channels.

    Returns:
        ``(O, C, kh, kw)`` weight (a new tensor).

    Raises:
        ValueError: unknown mode, or ``C`` not a multiple of ``num_modalities``.
    """
    if mode not in _INFLATE_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {_INFLATE_MODES}")
    if num_modalities < 1 or in_channels % num_modalities:
        raise ValueError(f"in_channels {in_channels} is not a multiple of num_modalities {num_modalities}")
    rgb_sum = weight.sum(1)
    out = weight.new_zeros(weight.shape[0], in_channels, *weight.shape[2:])
    if mode == "spread":
        out[:] = (rgb_sum / in_channels)[:, None]
        return out
    per_modality = in_channels // num_modalities
    for m in range(num_modalities):
        out[:, m * per_modality + per_modality // 2] = rgb_sum / num_modalities
    return out


def _read_checkpoint(checkpoint_dir: str | os.PathLike) -> Mask2FormerForUniversalSegmentation:
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise VolumeError(
            path, "checkpoint folder not found (expected a save_pretrained folder with config.json)"
        )
    if not (path / "config.json").is_file():
        raise VolumeError(path, "no config.json: not a Hugging Face save_pretrained checkpoint folder")
    try:
        with quiet_hf():
            return Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise VolumeError(path, f"cannot load the Mask2Former checkpoint: {err}") from err


def _transfer(
    source: dict[str, torch.Tensor],
    net: Mask2FormerNet,
    report: TransferReport,
    inflate: str,
    num_modalities: int,
    reinit_class_head: bool,
) -> TransferReport:
    target = net.hf_model.state_dict()
    merged = {}
    for name, value in target.items():
        src = source.get(name)
        is_head = name.startswith(_CLASS_HEAD)
        if src is None or (is_head and reinit_class_head):
            report.new.append(name)
            merged[name] = value
        elif src.shape == value.shape:
            report.loaded.append(name)
            merged[name] = src.to(value.dtype)
        elif (
            src.ndim == 4
            and value.ndim == 4
            and src.shape[1] == 3
            and src.shape[0] == value.shape[0]
            and src.shape[2:] == value.shape[2:]
            and "pixel_level_module.encoder." in name
        ):
            report.inflated.append(name)
            merged[name] = inflate_input_weight(src, value.shape[1], inflate, num_modalities).to(value.dtype)
        else:
            report.new.append(name)
            merged[name] = value
    report.unused = sorted(set(source) - set(target))
    net.hf_model.load_state_dict(merged, strict=True)
    log.info("weight transfer from %s: %s", report.checkpoint, report.summary())
    return report


def transfer_weights(
    net: Mask2FormerNet,
    checkpoint_dir: str | os.PathLike,
    inflate: str = "centre",
    num_modalities: int = 1,
    reinit_class_head: bool = False,
) -> TransferReport:
    """Load a local HF Mask2Former checkpoint into an existing network, adapting channels and classes.

    Args:
        net: the target network (e.g. ``Mask2FormerNet(preset="swin_t", in_channels=5, num_classes=3)``);
            modified in place.
        checkpoint_dir: a ``save_pretrained`` folder of ``Mask2FormerForUniversalSegmentation``.
        inflate: ``"centre"`` or ``"spread"`` (module docstring).
        num_modalities: ``M``, for ``"centre"`` inflation of ``C = M × (2k + 1)`` channels.
        reinit_class_head: re-initialise the class head even when ``K`` matches the checkpoint's.

    Returns:
        A :class:`TransferReport`; tensors whose shapes differ for other reasons (a different architecture)
        are listed as ``new``.

    Raises:
        VolumeError: missing folder, no ``config.json`` or an unreadable checkpoint (names the folder).
        ValueError: unknown inflation mode or channels not divisible by ``num_modalities``.
    """
    if inflate not in _INFLATE_MODES:
        raise ValueError(f"unknown inflation mode {inflate!r}; choose one of {_INFLATE_MODES}")
    source = _read_checkpoint(checkpoint_dir)
    report = TransferReport(checkpoint=os.fspath(checkpoint_dir))
    return _transfer(source.state_dict(), net, report, inflate, num_modalities, reinit_class_head)


def load_pretrained(
    checkpoint_dir: str | os.PathLike,
    in_channels: int,
    num_classes: int,
    num_queries: int | None = None,
    inflate: str = "centre",
    num_modalities: int = 1,
    reinit_class_head: bool = False,
    **net_kwargs,
) -> tuple[Mask2FormerNet, TransferReport]:
    """Build a :class:`Mask2FormerNet` with a checkpoint's architecture and transfer its weights.

    Args:
        checkpoint_dir: a ``save_pretrained`` folder of ``Mask2FormerForUniversalSegmentation``.
        in_channels: ``C`` of the new network.
        num_classes: ``K`` of the new network.
        num_queries: ``Q``; ``None`` keeps the checkpoint's (a different ``Q`` re-initialises the queries).
        inflate: ``"centre"`` or ``"spread"``.
        num_modalities: ``M`` for ``"centre"`` inflation.
        reinit_class_head: re-initialise the class head even when ``K`` matches.
        **net_kwargs: further :class:`Mask2FormerNet` keyword arguments (``fp32_decoder``, ``pad_value``).

    Returns:
        ``(network, report)``.

    Raises:
        VolumeError: as :func:`transfer_weights`.
        ValueError: bad counts, mode or modality split.
    """
    if inflate not in _INFLATE_MODES:
        raise ValueError(f"unknown inflation mode {inflate!r}; choose one of {_INFLATE_MODES}")
    if int(in_channels) < 1 or int(num_classes) < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1; got {in_channels}, {num_classes}")
    source = _read_checkpoint(checkpoint_dir)
    config = copy.deepcopy(source.config)
    config.backbone_config.num_channels = int(in_channels)
    config.num_labels = int(num_classes)
    if num_queries is not None:
        config.num_queries = int(num_queries)
    net = Mask2FormerNet(config=config, **net_kwargs)
    report = TransferReport(checkpoint=os.fspath(checkpoint_dir))
    return net, _transfer(source.state_dict(), net, report, inflate, num_modalities, reinit_class_head)
