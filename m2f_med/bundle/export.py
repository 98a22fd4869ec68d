"""Export a trained bundle network for deployment without m2f-med's Python code path (``torch.export``).

The bundle command ``python -m monai.bundle run export --config_file configs/inference.yaml`` calls
:func:`export_bundle_network`: the ``network_def`` gets the weights of ``ckpt_path`` and its inference path
(:class:`~m2f_med.networks.SemanticProbabilities`, slices → per-class probabilities) is exported with
:func:`m2f_med.networks.export_semantic` at a fixed slice size. With ``--format onnx`` the same
program goes to ONNX (:func:`m2f_med.networks.export_onnx`). TorchScript (MONAI's ``ckpt_export``) does not
work for HF's Mask2Former (``torch.jit.script`` fails, ``trace`` holds only at the traced size).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

__all__ = ["export_bundle_network"]


def export_bundle_network(
    network: nn.Module,
    ckpt_path: str | os.PathLike,
    image_size: Sequence[int],
    filepath: str | os.PathLike,
    batch_size: int = 1,
    export_format: str = "pt2",
) -> Path:
    """Load weights into ``network`` and save its ``torch.export`` program (``.pt2``), atomically.

    Args:
        network: the bundle's ``network_def`` (a :class:`~m2f_med.networks.VolumeProbabilities`, whose slice
            network is exported) or a slice network itself; moved to CPU.
        ckpt_path: state dict file (``models/model.pt``; read with ``torch.load(weights_only=True)`` or
            safetensors by :func:`m2f_med.inference.bundle_model.load_state_dict`).
        image_size: ``(H, W)`` slice size in pixels of the exported program (fixed shape).
        filepath: destination ``.pt2`` file.
        batch_size: ``B`` of the exported program.
        export_format: ``"pt2"`` (``torch.export`` program) or ``"onnx"`` (``torch.onnx.export(dynamo=True)``,
            needs the ``[onnx]`` extra; input ``"image"``, output ``"probabilities"``).

    Returns:
        The written path. ``torch.export.load(path).module()(x)`` maps ``(B, C, H, W)`` float32 (C = 2k+1
        windowed slices in [0, 1]) to ``(B, K+1, H, W)`` probabilities.

    Raises:
        VolumeError: missing/unreadable checkpoint or weights that do not fit (names the file).
        ValueError: bad ``image_size`` / ``batch_size`` / ``export_format``.
        ImportError: ``export_format="onnx"`` without ``onnx`` / ``onnxscript``.
    """
    from m2f_med.inference.bundle_model import load_state_dict
    from m2f_med.io.errors import VolumeError
    from m2f_med.networks import export_onnx, export_semantic, save_exported, slice_network

    state = load_state_dict(ckpt_path)
    network = network.cpu()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise VolumeError(ckpt_path, f"weights do not fit network_def: {str(err).splitlines()[0]}") from None
    network = slice_network(network)
    if str(export_format).lower() == "onnx":
        return export_onnx(network, filepath, [int(s) for s in image_size], int(batch_size))
    if str(export_format).lower() not in ("pt2", "torch.export", "export"):
        raise ValueError(f"export format must be 'pt2' or 'onnx'; got {export_format!r}")
    program = export_semantic(network, [int(s) for s in image_size], int(batch_size))
    return save_exported(program, filepath)
