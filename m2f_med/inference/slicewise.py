"""A MONAI ``Inferer`` for bundles: 2.5D slice-wise probabilities of a preprocessed volume batch.

MONAI's evaluators and bundle configs call ``inferer(inputs, network)`` and expect a tensor on the input
grid that ``Invertd`` / ``SaveImaged`` can take back to the source; :class:`SlicewiseInferer` is that
inferer. It reuses the slab loop pieces of :class:`~m2f_med.inference.inferer.VolumeInferer` (2.5D stacks
with edge replication, MONAI ``SliceInferer`` tiling) but, as MONAI's convention requires, returns the
full ``(B, K+1, X, Y, Z)`` float probability volume. The batch command (``m2f_med.inference.predict``)
does not use it: it keeps only a uint8 mask per volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from torch import nn

from m2f_med.inference.inferer import VolumeInferer
from m2f_med.transforms.slice_stack import take_slices

__all__ = ["SlicewiseInferer"]


def _default_wrapper(network: Callable) -> tuple[Callable, str]:
    """Mask2Former networks → ``SemanticProbabilities`` (probabilities); anything else → logits + softmax."""
    try:
        from m2f_med.networks import Mask2FormerNet, SemanticProbabilities, slice_network
    except ImportError:  # pragma: no cover
        return network, "softmax"
    network = slice_network(network)  # the bundle's network_def (VolumeProbabilities) tiles its slice network
    if isinstance(network, Mask2FormerNet):
        return SemanticProbabilities(network), "none"
    if isinstance(network, SemanticProbabilities):
        return network, "none"
    return network, "softmax"


class SlicewiseInferer(Inferer):
    """Slice-wise (2D / 2.5D) inference over ``(B, C, X, Y, Z)`` volumes, axial slices along the last axis.

    Args:
        num_context: ``k`` neighbouring slices per side stacked as channels (edge replication).
        roi_size: in-plane window ``(h, w)``; ``None`` = whole slice.
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction.
        mode: ``"gaussian"`` or ``"constant"`` blending.
        sigma_scale: Gaussian sigma as a fraction of the window.
        slab_size: slices processed together (bounds the temporary 2.5D stack).
        flip_tta: average over the input and its in-plane flips (``tta_flips``).
        tta_flips: in-plane axes to flip (0 = left/right in the RAS model space, 1 = anterior/posterior).
        lr_swap: ``(left, right)`` channel pairs exchanged after undoing a left/right flip
            (:func:`m2f_med.inference.inferer.left_right_pairs`).
        plan: ``"auto"``, ``"whole-slice"`` or ``"sliding-window"`` (see ``m2f_med.inference.inferer``).
        network_wrapper: callable applied to the network to get ``(B, K+1, H, W)`` probabilities, e.g.
            ``m2f_med.networks.SemanticProbabilities``; ``None`` = automatic (Mask2Former → semantic
            probabilities, other networks → softmax of their logits).
        activation: ``"none"`` or ``"softmax"`` applied after ``network_wrapper``; ``None`` = automatic
            (``"none"`` with a wrapper, otherwise as chosen by the automatic rule).

    Returns (from ``__call__``):
        ``(B, K+1, X, Y, Z)`` float32 probabilities, a MetaTensor with the input's meta when the input is one.

    Raises:
        ValueError: inputs that are not 5-D, or invalid settings (see ``VolumeInferer``).

    See Also:
        MONAI ``monai.inferers.SliceInferer``; ``docs/bundle_contract.md``.
    """

    def __init__(
        self,
        num_context: int = 0,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        slab_size: int = 16,
        flip_tta: bool = False,
        tta_flips: Sequence[int] = (0, 1),
        lr_swap: Sequence[Sequence[int]] = (),
        plan: str = "auto",
        network_wrapper: Callable[[nn.Module], Callable] | None = None,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = {
            "num_context": num_context, "roi_size": None if roi_size is None else list(roi_size)[:2],
            "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, "sigma_scale": sigma_scale,
            "slab_size": slab_size, "flip_tta": flip_tta, "tta_flips": list(tta_flips),
            "lr_swap": [tuple(p) for p in lr_swap], "plan": plan,
        }
        self.network_wrapper = network_wrapper
        self.activation = activation
        VolumeInferer(**self.options)  # validate now, not at the first batch

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Probabilities for every voxel of every volume in the batch (see the class docstring)."""
        if inputs.ndim != 5:
            raise ValueError(f"SlicewiseInferer expects (B, C, X, Y, Z) inputs; got shape {tuple(inputs.shape)}")
        if self.network_wrapper is not None:
            from m2f_med.networks import slice_network

            predictor, activation = self.network_wrapper(slice_network(network)), "none"
        else:
            predictor, activation = _default_wrapper(network)
        activation = self.activation or activation
        inferer = VolumeInferer(device=inputs.device, activation=activation, **self.options)
        k = inferer.num_context
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        depth = int(plain.shape[-1])
        if depth < 1 or plain.shape[0] < 1:
            raise ValueError(f"SlicewiseInferer got an empty batch or volume: shape {tuple(plain.shape)}")
        out: torch.Tensor | None = None
        for b in range(plain.shape[0]):
            for s0 in range(0, depth, inferer.slab_size):
                s1 = min(depth, s0 + inferer.slab_size)
                ext = np.clip(np.arange(s0 - k, s1 + k), 0, depth - 1)
                probs = inferer.infer_slab(take_slices(plain[b], ext), predictor)
                if out is None:
                    out = torch.zeros((plain.shape[0], probs.shape[0], *plain.shape[2:]),
                                      dtype=torch.float32, device=plain.device)
                out[b, ..., s0:s1] = probs.to(out.device)
        return convert_to_dst_type(out, inputs, dtype=torch.float32)[0]
