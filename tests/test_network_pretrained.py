"""Transfer learning from a local HF Mask2Former checkpoint (saved offline with save_pretrained)."""

from __future__ import annotations

import pytest
import torch
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from m2f_med.io.errors import VolumeError
from m2f_med.networks import Mask2FormerNet, build_config, load_pretrained, transfer_weights
from m2f_med.networks.config import quiet_hf
from m2f_med.networks.pretrained import inflate_input_weight

RESNET_CONV = "model.pixel_level_module.encoder.embedder.embedder.convolution.weight"
SWIN_CONV = "model.pixel_level_module.encoder.swin.embeddings.patch_embeddings.projection.weight"
HEAD = ["class_predictor.weight", "class_predictor.bias", "criterion.empty_weight"]


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory):
    """A random 3-channel, 2-class HF model standing in for a downloaded COCO/ADE20K checkpoint."""
    torch.manual_seed(0)
    with quiet_hf():
        model = Mask2FormerForUniversalSegmentation(build_config("tiny", in_channels=3, num_classes=2))
    folder = tmp_path_factory.mktemp("rgb_m2f")
    model.save_pretrained(folder)
    return folder, model.state_dict()


def test_load_into_c_channel_k_class_net(rgb_checkpoint):
    folder, source = rgb_checkpoint
    net, report = load_pretrained(folder, in_channels=5, num_classes=4)
    assert report.inflated == [RESNET_CONV]
    assert sorted(report.new) == sorted(HEAD)
    assert report.unused == []
    assert len(report.loaded) == len(source) - 1 - len(HEAD)
    state = net.hf_model.state_dict()
    name = "model.transformer_module.queries_features.weight"
    assert name in report.loaded and torch.equal(state[name], source[name])
    conv = state[RESNET_CONV]
    assert conv.shape[1] == 5
    torch.testing.assert_close(conv[:, 2], source[RESNET_CONV].sum(1))  # centre slice = RGB sum
    assert float(conv[:, [0, 1, 3, 4]].abs().max()) == 0.0
    assert state["class_predictor.weight"].shape == (5, 64)
    assert "3 inflated" not in report.summary() and "1 inflated" in report.summary()
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 5, 32, 32))
    assert out.class_logits.shape[-1] == 5


def test_centre_inflation_sees_the_2d_slice(rgb_checkpoint):
    """At step 0 a 2.5D stack gives the response of the grey centre slice shown to the RGB model."""
    folder, source = rgb_checkpoint
    net, _ = load_pretrained(folder, in_channels=3 * 1 + 2, num_classes=2)
    rgb_net, _ = load_pretrained(folder, in_channels=3, num_classes=2)
    centre = torch.rand(1, 1, 32, 32)
    stack = torch.cat([torch.rand(1, 2, 32, 32), centre, torch.rand(1, 2, 32, 32)], dim=1)
    with torch.no_grad():
        a = net.eval()(stack).mask_logits
        b = rgb_net.eval()(centre.expand(1, 3, 32, 32)).mask_logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_spread_and_modalities():
    weight = torch.randn(8, 3, 7, 7)
    spread = inflate_input_weight(weight, 5, "spread")
    torch.testing.assert_close(spread.sum(1), weight.sum(1))
    torch.testing.assert_close(spread[:, 0], spread[:, 4])
    two = inflate_input_weight(weight, 6, "centre", num_modalities=2)  # (T1: z-1, z, z+1), (T2: ...)
    torch.testing.assert_close(two[:, 1], weight.sum(1) / 2)
    torch.testing.assert_close(two[:, 4], weight.sum(1) / 2)
    assert float(two[:, [0, 2, 3, 5]].abs().max()) == 0.0
    with pytest.raises(ValueError, match="multiple"):
        inflate_input_weight(weight, 5, "centre", num_modalities=2)
    with pytest.raises(ValueError, match="inflation mode"):
        inflate_input_weight(weight, 5, "mean")


def test_same_classes_keep_head_unless_asked(rgb_checkpoint):
    folder, source = rgb_checkpoint
    net = Mask2FormerNet(preset="tiny", in_channels=1, num_classes=2)
    report = transfer_weights(net, folder)
    assert report.new == [] and report.inflated == [RESNET_CONV]
    assert torch.equal(net.hf_model.class_predictor.weight, source["class_predictor.weight"])
    report = transfer_weights(net, folder, reinit_class_head=True)
    assert sorted(report.new) == sorted(HEAD)


def test_changed_query_count_is_new(rgb_checkpoint):
    folder, _ = rgb_checkpoint
    _, report = load_pretrained(folder, in_channels=3, num_classes=2, num_queries=8)
    assert "model.transformer_module.queries_embedder.weight" in report.new
    assert report.inflated == []


def test_swin_patch_embedding_is_inflated(tmp_path):
    torch.manual_seed(0)
    swin = SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=swin,
        num_labels=3,
        feature_size=64,
        mask_feature_size=64,
        hidden_dim=64,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=4,
        num_queries=4,
        dim_feedforward=64,
        encoder_feedforward_dim=64,
    )
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path)
    net, report = load_pretrained(tmp_path, in_channels=3, num_classes=1, inflate="spread")
    assert report.inflated == [] and sorted(report.new) == sorted(HEAD)
    net, report = load_pretrained(tmp_path, in_channels=7, num_classes=1, inflate="spread")
    assert report.inflated == [SWIN_CONV]
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 7, 40, 40))
    assert out.mask_logits.shape == (1, 4, 10, 10)


def test_bad_checkpoint_folders_are_named(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        load_pretrained(tmp_path / "missing", 3, 2)
    with pytest.raises(VolumeError, match="config.json"):
        load_pretrained(tmp_path, 3, 2)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(VolumeError, match=str(tmp_path)):
        load_pretrained(tmp_path, 3, 2)
