"""Bundle loading (``load_bundle``) and ``make_test_bundle``, a tiny bundle generator other tests reuse.

``make_test_bundle`` writes ``configs/inference.yaml`` and ``models/model.pt`` into a folder, with either a
real (random, tiny) ``Mask2FormerNet`` or ``LabelStub``: an identity-like network that returns the one-hot of
``round(x · K)`` of its centre input channel, so a label map coded as intensity (label × 100 HU) comes out
unchanged. The stub lives in a module written beside the bundle (``stub_module_dir``), which the caller puts
on ``sys.path`` (``monkeypatch.syspath_prepend``) or ``PYTHONPATH`` (subprocesses).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from m2f_med.inference import BundleModel, load_bundle, predict_volume
from m2f_med.io.errors import VolumeError
from m2f_med.io.volume import make_volume

STUB_MODULE = "m2f_test_stubs"
STUB_SOURCE = textwrap.dedent(
    '''
    """Test-only networks for m2f-med bundles."""
    import time

    import torch
    import torch.nn.functional as F


    class LabelStub(torch.nn.Module):
        """(B, C, H, W) -> one-hot (B, K+1, H, W) of round(x[:, centre] * K); optional delay per call (s)."""

        def __init__(self, in_channels=1, num_classes=2, delay=0.0):
            super().__init__()
            self.in_channels = in_channels
            self.num_classes = num_classes
            self.delay = float(delay)
            self.register_buffer("levels", torch.tensor(float(num_classes)))

        def forward(self, x):
            if self.delay:
                time.sleep(self.delay)
            cls = torch.round(x[:, self.in_channels // 2] * self.levels).long().clamp(0, self.num_classes)
            return F.one_hot(cls, self.num_classes + 1).permute(0, 3, 1, 2).float()
    '''
)


def stub_module_dir(root: Path) -> Path:
    """Write the stub network module into ``root/stubmods`` and return that folder (for ``sys.path``)."""
    d = Path(root) / "stubmods"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{STUB_MODULE}.py").write_text(STUB_SOURCE)
    return d


def make_test_bundle(
    root: Path,
    *,
    network: str = "stub",
    labels: dict | None = None,
    k: int = 0,
    pixdim=None,
    intensity: dict | None = None,
    modality: str | None = "CT",
    roi_size=None,
    delay: float = 0.0,
    ckpt: str = "pt",
    extra: dict | None = None,
) -> Path:
    """A tiny MONAI bundle in ``root`` (see the module docstring). ``ckpt``: ``"pt"`` (``{"network": sd}``),
    ``"plain"`` (state dict), ``"safetensors"`` or ``"none"``."""
    root = Path(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    labels = labels or {"1": "liver", "2": "spleen"}
    n = len(labels)
    if network == "stub":
        net_def = {"_target_": f"{STUB_MODULE}.LabelStub", "in_channels": 2 * k + 1, "num_classes": n, "delay": delay}
    else:
        net_def = {"_target_": "m2f_med.networks.Mask2FormerNet", "preset": "tiny", "in_channels": 2 * k + 1,
                   "num_classes": n}
    cfg = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "labels": labels,
        "num_context_slices": k,
        "pixdim": pixdim,
        "intensity": intensity if intensity is not None else {"a_min": 0, "a_max": 100 * n, "b_min": 0, "b_max": 1},
        "roi_size": roi_size,
        "sw_batch_size": 8,
        "overlap": 0.25,
        "modality": modality,
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "network_def": net_def,
        "network_output": "probabilities" if network == "stub" else "auto",
        **(extra or {}),
    }
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "configs" / "metadata.json").write_text('{"name": "test bundle", "version": "0.0.1"}')
    if network == "stub":
        state = {"levels": torch.tensor(float(n))}
    else:
        from m2f_med.networks import Mask2FormerNet

        torch.manual_seed(0)
        state = Mask2FormerNet(preset="tiny", in_channels=2 * k + 1, num_classes=n).state_dict()
    if ckpt == "pt":
        torch.save({"network": state}, root / "models" / "model.pt")
    elif ckpt == "plain":
        torch.save({f"module.{key}": v for key, v in state.items()}, root / "models" / "model.pt")
    elif ckpt == "safetensors":
        from safetensors.torch import save_file

        save_file({key: v.contiguous() for key, v in state.items()}, str(root / "models" / "model.safetensors"))
    return root


@pytest.fixture()
def stubs_on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(stub_module_dir(tmp_path)))
    return tmp_path


def test_load_mask2former_bundle_and_segment(tmp_path):
    bundle = make_test_bundle(tmp_path / "b", network="mask2former", k=1, pixdim=[1.5, 1.5, -1],
                              intensity={"a_min": -160, "a_max": 240}, roi_size=[64, 64],
                              extra={"label_postprocessing": {"keep_largest": True}})
    model = load_bundle(bundle)
    from m2f_med.networks import Mask2FormerNet, SemanticProbabilities

    assert isinstance(model.network, Mask2FormerNet) and not model.network.training
    assert isinstance(model.predictor, SemanticProbabilities) and model.activation == "none"
    assert model.labels == {1: "liver", 2: "spleen"} and model.num_context_slices == 1
    assert model.checkpoint == (bundle / "models" / "model.pt").resolve()
    assert model.metadata["version"] == "0.0.1"
    assert model.postprocessing["keep_largest"] is True
    # the weights really are the checkpoint's
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)["network"]
    name = next(iter(saved))
    assert torch.equal(model.network.state_dict()[name], saved[name])
    vol = make_volume(torch.randn(1, 40, 36, 3) * 100, np.diag([-2.0, -2.0, 3.0, 1.0]), modality="CT")
    mask, extras = predict_volume(vol, model)
    assert mask.shape == vol.shape and torch.equal(mask.affine, vol.affine)
    assert set(extras["confidence"]) == {"liver", "spleen"}
    info = model.describe()
    assert info["checkpoint_sha256"] and info["labels"] == {"1": "liver", "2": "spleen"}


@pytest.mark.parametrize("ckpt", ["plain", "safetensors"])
def test_checkpoint_layouts(stubs_on_path, ckpt):
    model = load_bundle(make_test_bundle(stubs_on_path / "b", ckpt=ckpt))
    assert float(model.network.levels) == 2.0
    assert model.checkpoint.name == ("model.safetensors" if ckpt == "safetensors" else "model.pt")


def test_bundle_errors_name_the_file(stubs_on_path, tmp_path):
    with pytest.raises(VolumeError, match="not a bundle"):
        load_bundle(tmp_path)
    missing = make_test_bundle(tmp_path / "nockpt", ckpt="none")
    with pytest.raises(VolumeError, match="checkpoint not found") as err:
        load_bundle(missing)
    assert err.value.path.endswith("model.pt")
    gap = make_test_bundle(tmp_path / "gap", labels={"1": "liver", "3": "spleen"})
    with pytest.raises(VolumeError, match="1..K"):
        load_bundle(gap)
    bad_window = make_test_bundle(tmp_path / "win", intensity={"a_min": 5, "a_max": 1})
    with pytest.raises(VolumeError, match="a_min"):
        load_bundle(bad_window)
    # weights of another network: the mismatching keys are named
    wrong = make_test_bundle(tmp_path / "wrong")
    torch.save({"network": {"other": torch.zeros(1)}}, wrong / "models" / "model.pt")
    with pytest.raises(VolumeError, match="do not fit network_def") as err:
        load_bundle(wrong)
    assert "levels" in str(err.value)
    # pickled objects are refused (weights_only)
    torch.save({"network": {"levels": torch.zeros(())}, "extra": object()}, wrong / "models" / "model.pt")
    with pytest.raises(VolumeError, match="cannot read checkpoint"):
        load_bundle(wrong)
    no_net = make_test_bundle(tmp_path / "nonet")
    cfg = yaml.safe_load((no_net / "configs" / "inference.yaml").read_text())
    del cfg["network_def"]
    (no_net / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(VolumeError, match="network_def"):
        load_bundle(no_net)


def test_bundle_model_validates_labels():
    with pytest.raises(ValueError, match="1..K"):
        BundleModel(network=torch.nn.Identity(), labels={})
    with pytest.raises(ValueError, match="output"):
        BundleModel(network=torch.nn.Identity(), labels={1: "a"}, output="sigmoid")
