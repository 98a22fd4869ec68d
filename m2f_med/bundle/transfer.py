"""``--pretrained PATH`` for the bundles: start training from a local HF Mask2Former checkpoint folder."""

from __future__ import annotations

import logging
import os

from torch import nn

__all__ = ["with_pretrained"]

log = logging.getLogger(__name__)


def with_pretrained(network: nn.Module, pretrained: str | os.PathLike | None, num_modalities: int = 1) -> nn.Module:
    """``network`` with the weights of a ``save_pretrained`` folder transferred in (or unchanged for ``None``).

    Args:
        network: the bundle's ``network_def`` (a :class:`m2f_med.networks.Mask2FormerNet`).
        pretrained: a local Hugging Face ``Mask2FormerForUniversalSegmentation`` folder (``config.json`` +
            weights, as written by ``save_pretrained``); nothing is downloaded. ``None`` / ``""``: no transfer.
        num_modalities: image channels before 2.5D stacking, for the first-layer inflation
            (:func:`m2f_med.networks.transfer_weights`).

    Returns:
        The same network object, modified in place.

    Raises:
        VolumeError: the folder is missing or not a Mask2Former checkpoint (names the folder).
        TypeError: ``network`` is not a Mask2Former network (e.g. the UNet baseline).
    """
    if not pretrained:
        return network
    from m2f_med.networks import Mask2FormerNet, transfer_weights

    if not isinstance(network, Mask2FormerNet):
        raise TypeError(f"--pretrained needs a Mask2Former network; the bundle's network is {type(network).__name__}")
    report = transfer_weights(network, pretrained, num_modalities=int(num_modalities))
    log.info("pretrained %s: %d tensors loaded, %d inflated, %d new, %d unused", pretrained, len(report.loaded),
             len(report.inflated), len(report.new), len(report.unused))
    return network
