"""ONNX Runtime backend: same probabilities as eager PyTorch, one cached export per input shape."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from m2f_med.inference import BundleModel
from m2f_med.inference.onnx_backend import OnnxPredictor
from m2f_med.networks import Mask2FormerNet, SemanticProbabilities

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="optional [onnx] extra not installed",
)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Mask2FormerNet(preset="tiny", in_channels=3, num_classes=2).eval()


@pytest.mark.slow  # one ONNX export: about 40 s on a CPU core
@needs_onnx
def test_onnx_matches_eager_and_reuses_its_cached_export(net, tmp_path):
    eager = SemanticProbabilities(net).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        ref = eager(x)
    fresh = OnnxPredictor(net, fallback=eager, export=True, folder=tmp_path)
    first = fresh(x[:2])  # exports (B=2, 64²) once
    assert list(tmp_path.glob("*.onnx")) and fresh.calls == {"onnx": 1, "torch": 0}
    torch.testing.assert_close(first, ref[:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fresh(x), ref, atol=1e-5, rtol=1e-4)  # 3 = a batch of 2 + a zero-padded one
    cached_only = OnnxPredictor(net, fallback=eager, export=False, folder=tmp_path)
    torch.testing.assert_close(cached_only(x[:1]), ref[:1], atol=1e-5, rtol=1e-4)
    assert cached_only.calls == {"onnx": 1, "torch": 0}
    assert len(list(tmp_path.glob("*.onnx"))) == 1


@needs_onnx
def test_auto_backend_never_exports_and_falls_back_to_eager(net, tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_MED_CACHE", str(tmp_path))
    model = BundleModel(network=net, labels={1: "a", 2: "b"}, backend="auto")
    pred = model.predictor
    assert isinstance(pred, OnnxPredictor)
    with torch.inference_mode():
        out = pred(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64) and pred.calls == {"onnx": 0, "torch": 1}
    assert not list(tmp_path.rglob("*.onnx"))


def test_backend_is_validated():
    with pytest.raises(ValueError, match="backend"):
        BundleModel(network=torch.nn.Identity(), labels={1: "a"}, backend="tensorrt")
    model = BundleModel(network=torch.nn.Identity(), labels={1: "a"}, backend="onnx", output="logits")
    with pytest.raises(ValueError, match="Mask2Former"):
        _ = model.predictor
