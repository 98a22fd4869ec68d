"""Export of the inference path (:class:`~m2f_med.networks.SemanticProbabilities`) at a fixed slice size.

``torch.jit.script`` fails on HF's Mask2Former and ``torch.jit.trace`` only holds at the traced size, so
we use ``torch.export`` (PyTorch 2 export: an ``ExportedProgram`` saved as ``.pt2``) with a static slice
size ``(H, W)`` and batch size. ONNX goes through ``torch.onnx.export(..., dynamo=True)``, which needs the
optional packages ``onnx`` and ``onnxscript`` (not dependencies of m2f-med; install them to use it).
Checked with onnx 1.23, onnxscript 0.7 and onnxruntime 1.32: the ONNX model (opset 18, about 8 MB for the
``tiny`` preset) gives the eager probabilities to 1e-7; the export takes about a minute on one CPU core.
Files are written atomically.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from m2f_med.io.atomic import atomic_write
from m2f_med.io.errors import VolumeError

from .postprocess import SemanticProbabilities

__all__ = ["export_semantic", "save_exported", "load_exported", "export_onnx"]


def _example_input(
    net: nn.Module, image_size: Sequence[int], batch_size: int
) -> tuple[nn.Module, torch.Tensor]:
    if len(image_size) != 2 or min(int(s) for s in image_size) < 1 or batch_size < 1:
        raise ValueError(
            f"image_size must be (H, W) >= 1 and batch_size >= 1; got {image_size}, {batch_size}"
        )
    wrapped = net if isinstance(net, SemanticProbabilities) else SemanticProbabilities(net)
    wrapped = wrapped.eval()
    param = next(wrapped.parameters())
    channels = int(wrapped.network.in_channels)
    example = torch.zeros(batch_size, channels, int(image_size[0]), int(image_size[1]), dtype=param.dtype)
    return wrapped, example.to(param.device)


def export_semantic(
    net: nn.Module, image_size: Sequence[int], batch_size: int = 1
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``SemanticProbabilities(net)`` in eval mode at a fixed input shape.

    Args:
        net: a :class:`~m2f_med.networks.Mask2FormerNet` (or an already wrapped ``SemanticProbabilities``);
            it is switched to eval mode.
        image_size: ``(H, W)`` of the slices, pixels.
        batch_size: ``B`` of the exported program.

    Returns:
        An ``ExportedProgram``; ``program.module()(x)`` maps ``(B, C, H, W)`` float32 to ``(B, K + 1, H, W)``
        probabilities (channel 0 background), for exactly that shape.

    Raises:
        ValueError: bad size or batch size.
    """
    wrapped, example = _example_input(net, image_size, batch_size)
    with torch.no_grad():
        return torch.export.export(wrapped, (example,))


def save_exported(program: torch.export.ExportedProgram, path: str | os.PathLike) -> Path:
    """Write an ``ExportedProgram`` atomically (``torch.export.save``), conventionally as ``*.pt2``.

    Args:
        program: from :func:`export_semantic`.
        path: destination file; its folder is created.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.export.save(program, tmp)
    return path


def load_exported(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """Read an ``ExportedProgram`` written by :func:`save_exported`.

    Args:
        path: a ``.pt2`` file.

    Returns:
        The program; call ``program.module()(x)``.

    Raises:
        VolumeError: the file is missing or is not a saved ``ExportedProgram`` (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(path, "exported program not found")
    try:
        return torch.export.load(path)
    except Exception as err:  # torch raises several unrelated types for a foreign or damaged file
        raise VolumeError(path, f"not a torch.export program: {err}") from err


def export_onnx(
    net: nn.Module, path: str | os.PathLike, image_size: Sequence[int], batch_size: int = 1, opset: int = 18
) -> Path:
    """Export ``SemanticProbabilities(net)`` to ONNX (``torch.onnx.export(dynamo=True)``) at a fixed shape.

    Args:
        net: as for :func:`export_semantic`.
        path: destination ``.onnx`` file (weights embedded), written atomically.
        image_size: ``(H, W)``.
        batch_size: ``B``.
        opset: ONNX opset version.

    Returns:
        The path written. Input ``"image"`` ``(B, C, H, W)``, output ``"probabilities"`` ``(B, K + 1, H, W)``.

    Raises:
        ImportError: ``onnx`` or ``onnxscript`` is not installed (optional; ``pip install onnx onnxscript``).
        ValueError: bad size or batch size.
    """
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs the optional packages {missing}: pip install onnx onnxscript")
    wrapped, example = _example_input(net, image_size, batch_size)
    path = Path(path)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            output_names=["probabilities"],
            external_data=False,
        )
    with atomic_write(path) as tmp:
        program.save(os.fspath(tmp))
    return path
