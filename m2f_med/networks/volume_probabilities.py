"""The bundle's ``network_def``: a volume-in, volume-out probability network around a 2.5D slice network.

MONAI tools treat ``network_def`` as the model: the model-zoo CI calls ``verify_net_in_out network_def``
with a ``(1, C, *spatial_shape)`` tensor from ``metadata.json`` and reads ``output.shape``; MONAI Label's
``BundleInferTask`` builds it, loads ``models/model.pt`` into it and takes the model's dimension from the
length of ``spatial_shape``. A Mask2Former returns per-query logits (no ``.shape``) for a 2-D slice, so
:class:`VolumeProbabilities` wraps it: ``(B, C, X, Y, Z)`` CT channels in, the ``2k + 1`` neighbouring
axial slices stacked as channels inside (edge replication, as in training), ``(B, K + 1, X, Y, Z)`` class
probabilities out (channel 0 background). Its state dict is the slice network's (``model.pt`` loads with
or without the ``network.`` prefix), so the checkpoint format does not change. Ours.

The bundle's inferer (:class:`~m2f_med.inference.SlicewiseInferer`) unwraps it and tiles slices in-plane;
calling the wrapper directly runs the same inferer on whole slices, which is what a plain ``SimpleInferer``
would do.
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from torch import nn

__all__ = ["VolumeProbabilities", "slice_network"]


class VolumeProbabilities(nn.Module):
    """``(B, C, X, Y, Z)`` → ``(B, K + 1, X, Y, Z)`` probabilities from a slice network, axial along ``Z``.

    Args:
        network: the slice network, ``(N, C·(2k+1), X, Y)`` → Mask2Former output (a
            :class:`~m2f_med.networks.Mask2FormerNet`) or ``(N, K + 1, X, Y)`` logits (any other network,
            e.g. the UNet baseline; a softmax is applied).
        num_context: ``k`` neighbouring slices per side (``num_context_slices`` of the bundle).
        slice_batch_size: slices per forward pass (bounds memory).

    Attributes:
        network: the wrapped slice network (what ``models/model.pt`` holds).
        num_context, in_channels (``C`` = slice network channels / (2k+1)), num_classes.

    Raises:
        ValueError: ``num_context < 0`` or ``slice_batch_size < 1``; in ``forward``, input that is not 5-D or
            whose channel count is not ``C``.
    """

    def __init__(self, network: nn.Module, num_context: int = 0, slice_batch_size: int = 8):
        super().__init__()
        if int(num_context) < 0 or int(slice_batch_size) < 1:
            raise ValueError(f"num_context must be >= 0 and slice_batch_size >= 1; got {num_context}, "
                             f"{slice_batch_size}")
        self.network = network
        self.num_context = int(num_context)
        self.slice_batch_size = int(slice_batch_size)
        net_channels = getattr(network, "in_channels", None)
        self.in_channels = None if net_channels is None else int(net_channels) // (2 * self.num_context + 1)
        self.num_classes = getattr(network, "num_classes", None)
        self.register_load_state_dict_pre_hook(_accept_slice_network_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for every voxel.

        Args:
            x: ``(B, C, X, Y, Z)`` preprocessed volume (windowed CT in [0, 1]); tensor or ``MetaTensor``.

        Returns:
            ``(B, K + 1, X, Y, Z)`` float32 plain tensor; channels sum to 1 at every voxel.
        """
        from m2f_med.inference.slicewise import SlicewiseInferer

        if isinstance(x, MetaTensor):
            x = x.as_tensor()
        if x.ndim != 5:
            raise ValueError(f"VolumeProbabilities expects (B, C, X, Y, Z) input; got shape {tuple(x.shape)}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(f"VolumeProbabilities expects {self.in_channels} input channel(s); got {x.shape[1]}")
        # the bundle inferer's own whole-slice path (2.5D stacks, padding rules, Mask2Former probabilities or
        # softmax of logits), so that calling the model and running the inferer cannot disagree
        inferer = SlicewiseInferer(num_context=self.num_context, roi_size=None, sw_batch_size=self.slice_batch_size)
        return torch.as_tensor(inferer(x.float(), self.network)).float()


def _accept_slice_network_keys(module, state_dict, prefix, *args) -> None:
    """Let ``load_state_dict`` take the slice network's own keys (``model.pt``) as well as prefixed ones."""
    inner = prefix + "network."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


def slice_network(network: nn.Module) -> nn.Module:
    """The slice network inside a :class:`VolumeProbabilities` (any other module is returned as it is)."""
    return network.network if isinstance(network, VolumeProbabilities) else network
