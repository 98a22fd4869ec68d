"""torch.export (and optional ONNX) of the inference path at a fixed slice size."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from m2f_med.io.errors import VolumeError
from m2f_med.networks import (
    Mask2FormerNet,
    SemanticProbabilities,
    export_onnx,
    export_semantic,
    load_exported,
    save_exported,
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Mask2FormerNet(preset="tiny", in_channels=3, num_classes=2, num_queries=8).eval()


def test_exported_program_matches_eager_and_round_trips(net, tmp_path):
    program = export_semantic(net, image_size=(50, 70))
    x = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        eager = SemanticProbabilities(net)(x)
        exported = program.module()(x)
    assert exported.shape == (1, 3, 50, 70)
    torch.testing.assert_close(exported, eager, atol=1e-5, rtol=1e-5)
    path = save_exported(program, tmp_path / "sub" / "m2f.pt2")
    assert path.is_file() and not list(path.parent.glob(".*partial*"))
    with torch.no_grad():
        reloaded = load_exported(path).module()(x)
    torch.testing.assert_close(reloaded, eager, atol=1e-5, rtol=1e-5)


def test_export_errors(net, tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        export_semantic(net, image_size=(0, 10))
    with pytest.raises(VolumeError, match="not found"):
        load_exported(tmp_path / "none.pt2")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a program")
    with pytest.raises(VolumeError, match="bad.pt2"):
        load_exported(bad)


@pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
    reason="optional onnx/onnxscript not installed",
)
def test_onnx_export(net, tmp_path):
    path = export_onnx(net, tmp_path / "m2f.onnx", image_size=(64, 64))
    assert path.stat().st_size > 100_000
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        x = torch.rand(1, 3, 64, 64)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (onnx_probs,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            eager = SemanticProbabilities(net)(x)
        torch.testing.assert_close(torch.from_numpy(onnx_probs), eager, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is not None, reason="onnx is installed")
def test_onnx_without_packages_says_what_to_install(net, tmp_path):
    with pytest.raises(ImportError, match="pip install onnx onnxscript"):
        export_onnx(net, tmp_path / "m2f.onnx", image_size=(64, 64))
    assert not (tmp_path / "m2f.onnx").exists()
