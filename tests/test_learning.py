"""Learning on real CT: the tiny preset overfits a handful of slices (liver, spleen, kidneys) to Dice > 0.9.

This ties the pieces together: label → targets, HF's Hungarian loss, and our semantic post-processing must
agree, or the Dice of the arg-max label map would not rise. Data: TotalSegmentator's example CT (3 mm,
Apache-2.0) and its model segmentation, read from the shared data folder. About 1 minute on one core.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice

from m2f_med.networks import Mask2FormerLoss, Mask2FormerNet, SemanticProbabilities

# TotalSegmentator ids → ours: liver(5) → 1, spleen(1) → 2, kidney_right(2) → 3, kidney_left(3) → 4
REMAP = {5: 1, 1: 2, 2: 3, 3: 4}
SLICES = [84, 88, 92, 96, 100, 40]  # axial indices; 40 has none of the four organs
WINDOW_HU = (-200.0, 300.0)


def _slices(data_dir):
    nib = pytest.importorskip("nibabel")
    folder = data_dir / "totalsegmentator"
    ct = np.asarray(nib.load(folder / "example_ct.nii.gz").dataobj, dtype=np.float32)[:, :, SLICES]
    seg = np.asarray(nib.load(folder / "example_seg_fast_force_split.nii.gz").dataobj).astype(np.int64)
    seg = seg[:, :, SLICES]
    lookup = np.zeros(seg.max() + 1, dtype=np.int64)
    for source, target in REMAP.items():
        lookup[source] = target
    lo, hi = WINDOW_HU
    image = torch.from_numpy(np.clip((ct - lo) / (hi - lo), 0.0, 1.0)).permute(2, 0, 1)[:, None]
    label = torch.from_numpy(lookup[seg]).permute(2, 0, 1)[:, None].float()
    return image, label


def _dice_per_class(net, image, label) -> torch.Tensor:
    """Dice of each class over all slices together (one volume-like image), from the arg-max label map."""
    net.eval()
    with torch.no_grad():
        pred = SemanticProbabilities(net)(image).argmax(1)
    net.train()
    k = len(REMAP) + 1
    onehot_pred = F.one_hot(pred, k).permute(0, 3, 1, 2).float()
    onehot_true = F.one_hot(label[:, 0].long(), k).permute(0, 3, 1, 2).float()
    as_one = lambda t: torch.cat(list(t), dim=1)[None]  # noqa: E731  (N, K, H, W) -> (1, K, N*H, W)
    return compute_dice(as_one(onehot_pred), as_one(onehot_true), include_background=False)[0]


def test_tiny_preset_overfits_real_ct_slices(data_dir):
    image, label = _slices(data_dir)
    assert image.shape == (6, 1, 122, 101)
    assert set(torch.unique(label[:5]).tolist()) == {0, 1, 2, 3, 4} and torch.unique(label[5]).tolist() == [0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 shared cores one thread is faster than two
    try:
        torch.manual_seed(0)
        net = Mask2FormerNet(preset="tiny", in_channels=1, num_classes=len(REMAP))
        loss_fn = Mask2FormerLoss(num_classes=len(REMAP), preset="tiny")
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        history = []
        for step in range(1, 201):
            optimizer.zero_grad()
            loss = loss_fn(net(image), label)
            loss.backward()
            optimizer.step()
            assert bool(torch.isfinite(loss)), f"loss became {loss.item()} at step {step}"
            if step % 25 == 0:
                dice = _dice_per_class(net, image, label)
                history.append((step, round(loss.item(), 2), [round(v, 3) for v in dice.tolist()]))
                if bool((dice > 0.9).all()):
                    break
    finally:
        torch.set_num_threads(threads)
    step, _, final = history[-1]
    assert min(final) > 0.9, f"Dice per class (liver, spleen, kidney R, kidney L) by step: {history}"
    assert history[0][2] != final  # it learned; the first check is far from it
