"""Every shipped bundle deploys outside this checkout (MONAI Label, MONAI Deploy, model-zoo CI).

The bundle is copied to a temporary folder, the sample-data folder is made unreachable (no
``M2F_MED_DATA``, ``m2f_med.data.repo_root`` pointed at an empty folder), and the configs are parsed the way
the tools do: MONAI Label's ``BundleInferTask`` (``monailabel/tasks/infer/bundle.py``: ``read_config``,
``bundle_root`` set, ``network_def`` built and ``models/model.pt`` loaded with its ``"model"`` entry or
as a plain state dict, ``device``, ``preprocessing``, ``inferer``, ``postprocessing``, the model dimension
from ``len(spatial_shape)`` of the first metadata input) and MONAI Deploy's bundle operator (the same keys).
One synthetic CT volume then goes through preprocessing → inferer → postprocessing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from m2f_med.data import repo_root

BUNDLES = sorted(p.parent.parent for p in (repo_root() / "bundles").glob("*/configs/inference.yaml"))
NO_RUN = {"run", "initialize", "finalize", "export", "train", "validate", "evaluate"}


@pytest.fixture
def deployed(request, tmp_path, monkeypatch):
    """The bundle copied to ``tmp/<name>`` with no way to find the sample data."""
    import m2f_med.data

    monkeypatch.delenv(m2f_med.data.DATA_ENV, raising=False)
    monkeypatch.setattr(m2f_med.data, "repo_root", lambda: tmp_path / "nowhere" / "repo")
    assert m2f_med.data.data_dir() is None
    target = tmp_path / request.param.name
    shutil.copytree(request.param, target, ignore=shutil.ignore_patterns("eval", "runs", "*.pt2", "*.onnx"))
    return target


def _parser(bundle: Path, names: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / n) for n in names])
    parser.config.update({"bundle_root": str(bundle)})
    return parser


def _config_sets(bundle: Path) -> list[list[str]]:
    """inference.yaml, train.yaml, and each single-process config merged over train.yaml."""
    extra = sorted(p.name for p in (bundle / "configs").glob("*.yaml")
                   if p.name not in ("inference.yaml", "train.yaml") and not p.name.startswith("multi_gpu"))
    return [["inference.yaml"], ["train.yaml"]] + [["train.yaml", n] for n in extra]


@pytest.mark.parametrize("deployed", BUNDLES, ids=[b.name for b in BUNDLES], indirect=True)
def test_every_config_parses_without_the_data_folder(deployed):
    """Each top-level key evaluates; only keys that need the sample data ask for it (clear error naming it)."""
    from m2f_med.data import DATA_ENV

    for names in _config_sets(deployed):
        parser = _parser(deployed, names)
        asked = []
        for key in parser.config:
            if key in NO_RUN or key.startswith("_"):
                continue
            try:
                parser.get_parsed_content(key)
            except Exception as err:  # noqa: BLE001 - checked below
                text = f"{err} {err.__cause__}"
                assert DATA_ENV in text or "no cases to segment" in text, (names, key, text[:400])
                asked.append(key)
        if names == ["inference.yaml"]:
            assert asked == [], asked  # inference needs data only when it runs
            with pytest.raises(Exception) as err:  # MONAI wraps the error; ours is the cause
                parser.get_parsed_content("run")
            assert "no cases to segment" in str(err.value.__cause__) and DATA_ENV in str(err.value.__cause__)


@pytest.mark.parametrize("deployed", BUNDLES, ids=[b.name for b in BUNDLES], indirect=True)
def test_monai_label_style_parse_and_inference_on_one_volume(deployed, tmp_path):
    from monai.transforms import Compose, SaveImaged

    parser = _parser(deployed, ["inference.yaml"])
    parser.config.update({"device": "cpu", "output_dir": str(tmp_path / "out")})
    meta = json.loads((deployed / "configs" / "metadata.json").read_text())
    key_image, image_fmt = next(iter(meta["network_data_format"]["inputs"].items()))
    key_pred, pred_fmt = next(iter(meta["network_data_format"]["outputs"].items()))
    assert len(image_fmt["spatial_shape"]) == 3  # MONAI Label's `dimension`

    network = parser.get_parsed_content("network_def", instantiate=True)
    checkpoint = torch.load(deployed / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(checkpoint.get("model", checkpoint), strict=True)  # BasicInferTask's rule
    network.eval()
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    post = parser.get_parsed_content("postprocessing", instantiate=True)
    assert isinstance(pre, Compose) and isinstance(post, Compose)

    # a small synthetic CT at the bundle's in-plane spacing: soft tissue with a bright blob, air outside
    pixdim = [float(p) for p in parser.get_parsed_content("pixdim")[:2]]
    vol = np.full((48, 40, 6), -1000.0, np.float32)
    vol[8:40, 6:34] = 40.0
    vol[18:28, 14:24] = 150.0
    affine = np.diag([-pixdim[0], -pixdim[1], 3.0, 1.0])
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), src)

    data = pre({key_image: str(src)})
    with torch.no_grad():
        data[key_pred] = inferer(data[key_image][None], network)[0]
    assert data[key_pred].shape[0] == pred_fmt["num_channels"]
    out = post(data)
    label = out[key_pred]
    assert tuple(label.shape[1:]) == vol.shape  # back on the source grid
    assert 0 <= int(label.min()) and int(label.max()) < pred_fmt["num_channels"]
    assert any(isinstance(t, SaveImaged) for t in post.transforms)
    written = list((tmp_path / "out").rglob("*.nii.gz"))
    assert len(written) == 1 and nib.load(written[0]).shape[:3] == vol.shape

    # the volume network itself (what a plain SimpleInferer would call) equals whole-slice slice-wise inference
    from m2f_med.inference import SlicewiseInferer

    x = data[key_image][None]
    whole_slices = SlicewiseInferer(num_context=parser.get_parsed_content("num_context_slices"), roi_size=None)
    with torch.no_grad():
        direct = network(x)
        reference = torch.as_tensor(whole_slices(x, network))
    assert direct.shape == reference.shape == (1, pred_fmt["num_channels"], *vol.shape)
    torch.testing.assert_close(direct, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(direct.sum(1), torch.ones_like(direct[:, 0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_verify_net_in_out_network_def_as_model_zoo_ci(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.yaml"),
        device="cpu",
        n=2,
        any=3,
    )


def _need(module: str):
    import importlib.util
    import os

    if importlib.util.find_spec(module) is None:
        msg = f"{module} not installed (pip install 'm2f-med[onnx]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.mark.parametrize("deployed", [repo_root() / "bundles" / "m2f_ct_organs"], ids=["m2f_ct_organs"],
                         indirect=True)
def test_run_export_format_onnx_matches_eager_in_onnxruntime(deployed):
    """``run export --format onnx`` writes the slice network; onnxruntime reproduces eager probabilities."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        _need(module)
    import onnxruntime as ort
    from monai.bundle import run

    from m2f_med.networks import SemanticProbabilities, slice_network

    target = deployed / "models" / "model.onnx"
    run("export", config_file=str(deployed / "configs" / "inference.yaml"), bundle_root=str(deployed),
        format="onnx", export_image_size=[64, 64])
    assert target.is_file()

    parser = _parser(deployed, ["inference.yaml"])
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(deployed / "models" / "model.pt", weights_only=True), strict=True)
    eager = SemanticProbabilities(slice_network(network)).eval()
    x = torch.rand(1, int(slice_network(network).in_channels), 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = eager(x).numpy()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
