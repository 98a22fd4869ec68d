"""Fixtures for the napari plugin tests.

The plugin tests need napari (the ``napari`` extra) and, for anything that draws, a real X display:
pytest-xvfb starts Xvfb for the session (``QT_QPA_PLATFORM=offscreen`` has no GL context for napari's canvas).
"""

from __future__ import annotations

import pytest

pytest.importorskip("napari")
pytest.importorskip("napari_m2f_med")


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/napari/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.napari)


def _write_bundle(root, network_yaml: str, state: dict, labels: dict[int, str], extra: str = "") -> None:
    import torch

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    label_lines = "\n".join(f'  "{k}": {v}' for k, v in labels.items())
    (root / "configs" / "inference.yaml").write_text(
        f"labels:\n{label_lines}\nnum_context_slices: 1\n"
        "intensity: {a_min: -160, a_max: 240, b_min: 0.0, b_max: 1.0, clip: true}\n"
        f"{extra}network_def:\n{network_yaml}"
    )
    torch.save(state, root / "models" / "model.pt")


@pytest.fixture(scope="session")
def threshold_bundle(tmp_path_factory):
    """A bundle whose 1x1-conv 2.5D network labels soft tissue (40..200 HU) 'liver' and denser voxels 'spleen'.

    Deterministic and instant: the centre channel of the (k=1) 2.5D stack x in [0, 1] (CT window -160..240 HU)
    gives logits (0.5, x, 2x - 0.9) for (background, liver, spleen).
    """
    import torch

    root = tmp_path_factory.mktemp("threshold_bundle")
    weight = torch.zeros(3, 3, 1, 1)
    weight[1, 1] = 1.0
    weight[2, 1] = 2.0
    bias = torch.tensor([0.5, 0.0, -0.9])
    _write_bundle(
        root,
        "  _target_: torch.nn.Conv2d\n  in_channels: 3\n  out_channels: 3\n  kernel_size: 1\n",
        {"weight": weight, "bias": bias},
        {1: "liver", 2: "spleen"},
        extra="network_output: logits\n",
    )
    return root


@pytest.fixture(scope="session")
def mask2former_bundle(tmp_path_factory):
    """A random-weight tiny Mask2Former bundle (2.5D, k=1, 3 structures)."""
    import torch

    from m2f_med.networks import Mask2FormerNet

    root = tmp_path_factory.mktemp("m2f_bundle")
    torch.manual_seed(0)
    net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=3)
    _write_bundle(
        root,
        "  _target_: m2f_med.networks.Mask2FormerNet\n  preset: tiny\n  in_channels: 3\n  num_classes: 3\n",
        net.state_dict(),
        {1: "liver", 2: "kidney_left", 3: "aorta"},
    )
    return root
