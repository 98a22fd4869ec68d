"""Mask2FormerNet: shapes for 2D/2.5D inputs, padding, HF equivalence, gradients, autocast, persistence."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor
from transformers import Mask2FormerForUniversalSegmentation

from m2f_med.networks import PRESETS, Mask2FormerNet, SemanticProbabilities, build_config


@pytest.fixture(scope="module")
def net5():
    torch.manual_seed(0)
    return Mask2FormerNet(preset="tiny", in_channels=5, num_classes=3)


def _first_conv(net: Mask2FormerNet) -> torch.nn.Conv2d:
    return net.hf_model.model.pixel_level_module.encoder.embedder.embedder.convolution


@pytest.mark.parametrize("k", [0, 1, 2])
def test_shapes_for_2d_and_25d_stacks(k):
    channels = 2 * k + 1
    net = Mask2FormerNet(preset="tiny", in_channels=channels, num_classes=2).eval()
    assert _first_conv(net).in_channels == channels  # channels reach the backbone, not only the config
    with torch.no_grad():
        out = net(torch.rand(2, channels, 64, 96))
    queries = PRESETS["tiny"].num_queries
    assert out.class_logits.shape == (2, queries, 3)
    assert out.mask_logits.shape == (2, queries, 16, 24)
    assert out.aux_outputs is None
    assert out.class_logits.dtype == torch.float32 and not isinstance(out.mask_logits, MetaTensor)


def test_odd_size_is_padded_and_cropped(net5):
    net5.train()
    out = net5(torch.rand(2, 5, 250, 190))
    assert out.mask_logits.shape[-2:] == (math.ceil(250 / 4), math.ceil(190 / 4))
    decoder_layers = net5.config.decoder_layers
    assert len(out.aux_outputs) == decoder_layers - 1
    for cls, mask in out.aux_outputs:
        assert cls.shape == out.class_logits.shape and mask.shape == out.mask_logits.shape


def test_matches_hf_forward_on_padded_input(net5):
    """Our composition of HF's sub-modules gives HF's own forward, cropped."""
    net5.eval()
    x = torch.rand(1, 5, 70, 45)
    padded = torch.nn.functional.pad(x, (0, 64 - 45, 0, 96 - 70))
    with torch.no_grad():
        ours = net5(x)
        hf = Mask2FormerForUniversalSegmentation.forward(net5.hf_model, pixel_values=padded)
    torch.testing.assert_close(ours.class_logits, hf.class_queries_logits)
    torch.testing.assert_close(ours.mask_logits, hf.masks_queries_logits[..., :18, :12])


def test_metatensor_input_and_wrong_channels(net5):
    net5.eval()
    x = MetaTensor(torch.rand(1, 5, 32, 32), affine=torch.eye(4))
    with torch.no_grad():
        out = net5(x)
    assert type(out.mask_logits) is torch.Tensor
    with pytest.raises(ValueError, match="5 input channels"):
        net5(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net5(torch.rand(5, 32, 32))


def test_gradient_reaches_first_conv(net5):
    net5.train()
    net5.zero_grad()
    out = net5(torch.rand(1, 5, 64, 64))
    (out.mask_logits.mean() + out.class_logits.mean()).backward()
    grad = _first_conv(net5).weight.grad
    assert grad is not None and grad.shape[1] == 5
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_cpu_bf16_autocast_has_no_nan_and_fp32_decoder():
    torch.manual_seed(1)
    net = Mask2FormerNet(preset="tiny", in_channels=1, num_classes=2).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 1, 32, 32))
        probs = SemanticProbabilities(net)(torch.rand(1, 1, 32, 32))
    assert out.class_logits.dtype == torch.float32 and out.mask_logits.dtype == torch.float32
    assert bool(torch.isfinite(out.class_logits).all()) and bool(torch.isfinite(out.mask_logits).all())
    assert bool(torch.isfinite(probs).all())


def test_semantic_wrapper_sums_to_one(net5):
    net5.eval()
    with torch.no_grad():
        probs = SemanticProbabilities(net5)(torch.rand(2, 5, 50, 70))
    assert probs.shape == (2, 4, 50, 70)
    assert float(probs.min()) >= 0.0
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 50, 70), atol=1e-5, rtol=0)


def test_state_dict_round_trip_is_identical(net5, tmp_path):
    net5.eval()
    path = tmp_path / "weights.pt"
    torch.save(net5.state_dict(), path)
    torch.manual_seed(123)  # a different init, so equality can only come from the loaded weights
    other = Mask2FormerNet(preset="tiny", in_channels=5, num_classes=3).eval()
    x = torch.rand(1, 5, 40, 40)
    with torch.no_grad():
        before = other(x).mask_logits
        other.load_state_dict(torch.load(path, weights_only=True))
        a, b = net5(x), other(x)
    assert not torch.equal(before, a.mask_logits)
    assert torch.equal(a.class_logits, b.class_logits) and torch.equal(a.mask_logits, b.mask_logits)


def test_tiny_preset_size_and_counts():
    net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=4, num_queries=24)
    params = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= params <= 2_000_000
    assert (
        net.num_queries == 24 and net.hf_model.model.transformer_module.queries_embedder.num_embeddings == 24
    )
    with pytest.raises(ValueError, match="unknown preset"):
        Mask2FormerNet(preset="nope")
    with pytest.raises(ValueError, match="num_classes"):
        build_config("tiny", 3, 0)


@pytest.mark.parametrize("preset", ["swin_t", "resnet50"])
def test_gpu_presets_build_with_c_channels(preset):
    torch.manual_seed(0)
    net = Mask2FormerNet(preset=preset, in_channels=5, num_classes=2, num_queries=8).eval()
    params = sum(p.numel() for p in net.parameters())
    assert 30_000_000 < params < 60_000_000
    with torch.no_grad():
        out = net(torch.rand(1, 5, 64, 40))
    assert out.mask_logits.shape == (1, 8, 16, 10) and bool(torch.isfinite(out.mask_logits).all())


def test_bundle_instantiation():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "network_def": {
                "_target_": "m2f_med.networks.Mask2FormerNet",
                "preset": "tiny",
                "in_channels": 3,
                "num_classes": 4,
                "num_queries": 8,
            },
            "loss": {"_target_": "m2f_med.networks.Mask2FormerLoss", "num_classes": 4, "preset": "tiny"},
        }
    )
    net = parser.get_parsed_content("network_def")
    loss = parser.get_parsed_content("loss")
    assert isinstance(net, Mask2FormerNet) and net.num_classes == 4 and net.num_queries == 8
    assert loss.criterion.num_points == PRESETS["tiny"].train_num_points
