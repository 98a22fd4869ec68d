"""RandOrganContrastd: per-structure offsets inside the labelled voxels only, clipped, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m2f_med.transforms.contrast import RandOrganContrastd

LABELS = {"1": "liver", "2": "aorta", "3": "vertebrae_L1"}


def _case():
    img = torch.full((3, 8, 8, 4), 0.5)
    lab = torch.zeros((1, 8, 8, 4))
    lab[0, :4] = 1
    lab[0, 6:, 6:] = 2
    lab[0, 4, 0] = 3
    return {"image": img, "label": lab}


def test_offsets_follow_the_labels_and_keep_the_input():
    data = _case()
    t = RandOrganContrastd("image", "label", LABELS, hu_scale=1 / 400, prob=1.0, clip_range=(0.0, 1.0))
    t.set_random_state(0)
    out = t(data)
    assert torch.equal(data["image"], torch.full((3, 8, 8, 4), 0.5))  # input untouched
    img, lab = out["image"], data["label"][0]
    liver = img[:, lab == 1]
    aorta = img[:, lab == 2]
    # one offset per structure, the same in all channels (2.5D context)
    assert torch.allclose(liver, liver.flatten()[0].expand_as(liver))
    assert torch.allclose(aorta, aorta.flatten()[0].expand_as(aorta))
    assert liver.min() >= 0.5 and liver.max() <= 0.5 + 70 / 400 + 1e-6
    assert aorta.max() <= 0.5 + 260 / 400 + 1e-6 and aorta.max() > 0.5
    # background and structures without a range stay as they were
    assert torch.all(img[:, lab == 0] == 0.5)
    assert torch.all(img[:, lab == 3] == 0.5)


def test_clipping_and_numpy_input():
    data = _case()
    data["image"] = np.full((1, 8, 8, 4), 0.99, dtype=np.float32)
    t = RandOrganContrastd("image", "label", {"2": "aorta"}, enhancement_hu={"aorta": (200.0, 200.0)},
                           hu_scale=1 / 400, prob=1.0)
    t.set_random_state(1)
    out = t(data)["image"]
    assert isinstance(out, np.ndarray) and out.max() <= 1.0
    assert (out[0][data["label"][0].numpy() == 2] == 1.0).all()


def test_prob_zero_is_identity_and_bad_input_raises():
    data = _case()
    t = RandOrganContrastd("image", "label", LABELS, prob=0.0)
    assert torch.equal(t(data)["image"], data["image"])
    with pytest.raises(ValueError, match="low > high"):
        RandOrganContrastd("image", "label", LABELS, enhancement_hu={"liver": (10.0, 0.0)})
    t = RandOrganContrastd("image", "label", LABELS, prob=1.0)
    bad = dict(data, label=torch.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="does not match"):
        t(bad)
    with pytest.raises(KeyError):
        t({"image": data["image"]})
