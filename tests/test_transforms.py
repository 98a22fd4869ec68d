"""Transforms: 2.5D slice stacks, foreground-weighted slice sampling, label remapping, the MONAI reader."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from m2f_med.io.volume import make_volume
from m2f_med.transforms import (
    M2FMedReader,
    RandSliceStackd,
    RemapLabels,
    RemapLabelsd,
    SliceStack,
    SliceStackd,
    mapping_from_names,
    slice_stack_indices,
)


def _volume(c=2, x=5, y=4, z=7, affine=None):
    data = torch.arange(c * x * y * z, dtype=torch.float32).reshape(c, x, y, z)
    aff = np.diag([0.8, 0.9, 2.5, 1.0]) if affine is None else affine
    aff = aff.copy()
    aff[:3, 3] = (10.0, -20.0, 30.0)
    return make_volume(data, aff, modality="CT")


# ------------------------------------------------------------------------------------------ SliceStack
def test_slice_stack_channel_order_and_edge_replication():
    vol = _volume(c=2, z=7)
    k = 2
    out = SliceStack(num_context=k)(vol, index=0)
    assert out.shape == (2 * (2 * k + 1), 5, 4)
    # modality-major, then z-k..z+k, clamped at the first slice
    for c in range(2):
        for j, z in enumerate([0, 0, 0, 1, 2]):
            assert torch.equal(out[c * 5 + j], vol[c, :, :, z]), (c, j)
    last = SliceStack(num_context=k)(vol, index=6)
    for j, z in enumerate([4, 5, 6, 6, 6]):
        assert torch.equal(last[5 + j], vol[1, :, :, z])


def test_slice_stack_keeps_geometry_of_the_returned_slice():
    vol = _volume()
    out = SliceStack(1)(vol, index=3)
    expected = vol.affine.clone()
    expected[:3, 3] += 3 * vol.affine[:3, 2]
    assert isinstance(out, MetaTensor)
    assert torch.allclose(out.affine, expected)
    assert out.meta["slice_index"] == 3
    # the input is untouched and its meta not shared
    assert vol.meta.get("slice_index") is None
    assert torch.equal(vol.affine[:3, 3], torch.tensor([10.0, -20.0, 30.0], dtype=torch.float64))


def test_slice_stack_slab_equals_single_slices():
    vol = _volume(c=1, z=6)
    slab = SliceStack(1)(vol, index=range(1, 5))
    assert slab.shape == (3, 5, 4, 4)
    for i, z in enumerate(range(1, 5)):
        assert torch.equal(slab[..., i], SliceStack(1)(vol, index=z))
    everything = SliceStack(1)(vol)
    assert everything.shape == (3, 5, 4, 6)
    assert everything.meta["slice_index"] == list(range(6))


def test_slice_stack_plain_tensor_and_numpy():
    arr = np.random.default_rng(0).random((1, 3, 3, 4)).astype(np.float32)
    out = SliceStack(0)(arr, index=2)
    assert not isinstance(out, MetaTensor)
    np.testing.assert_array_equal(out.numpy(), arr[:, :, :, 2])


@pytest.mark.parametrize("bad", [5, -6])
def test_slice_stack_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="out of range"):
        SliceStack(1)(_volume(z=5), index=bad)


def test_slice_stack_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        SliceStack(1)(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError):
        SliceStack(-1)


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 9), k=st.integers(0, 4), z=st.integers(0, 8))
def test_slice_stack_indices_property(depth, k, z):
    z = z % depth
    idx = slice_stack_indices([z], k, depth)[0]
    assert len(idx) == 2 * k + 1
    assert idx[k] == z
    assert idx.min() >= 0 and idx.max() <= depth - 1
    expected = [min(max(z + j, 0), depth - 1) for j in range(-k, k + 1)]
    assert idx.tolist() == expected


def test_slice_stackd_per_key_context():
    vol = _volume(c=1)
    lab = make_volume(torch.randint(0, 3, (1, 5, 4, 7), dtype=torch.uint8), vol.affine)
    out = SliceStackd(["image", "label"], num_context=[2, 0], index_key="z")({"image": vol, "label": lab, "z": 4})
    assert out["image"].shape == (5, 5, 4)
    assert out["label"].shape == (1, 5, 4)
    assert torch.equal(out["label"][0], lab[0, :, :, 4])
    assert out["label"].dtype == torch.uint8


# ------------------------------------------------------------------------------------------ RandSliceStackd
def _labelled(z_fg=(2, 5), depth=10):
    img = _volume(c=1, z=depth)
    lab = torch.zeros((1, 5, 4, depth), dtype=torch.uint8)
    for z in z_fg:
        lab[0, 1, 1, z] = 1
    return {"image": img, "label": make_volume(lab, img.affine), "case": {"id": "a"}}


def test_rand_slice_stackd_positive_only_picks_foreground():
    t = RandSliceStackd(["image", "label"], num_context=1, pos=1.0, neg=0.0, num_samples=20)
    t.set_random_state(0)
    samples = t(_labelled())
    assert len(samples) == 20
    zs = {s["label"].meta["slice_index"] for s in samples}
    assert zs <= {2, 5} and zs  # only foreground slices
    s = samples[0]
    assert s["image"].shape == (3, 5, 4) and s["label"].shape == (1, 5, 4)
    assert s["label"].sum() == 1
    z = s["image"].meta["slice_index"]
    assert torch.allclose(s["image"].affine[:3, 3], torch.tensor([10.0, -20.0, 30.0 + 2.5 * z], dtype=torch.float64))
    # untouched keys are deep copies, not shared objects
    assert s["case"] == {"id": "a"} and s["case"] is not samples[1]["case"]


def test_rand_slice_stackd_negative_only_and_ratio():
    data = _labelled()
    neg = RandSliceStackd(["image", "label"], pos=0.0, neg=1.0, num_samples=30)
    neg.set_random_state(1)
    assert all(s["label"].meta["slice_index"] not in (2, 5) for s in neg(data))
    mixed = RandSliceStackd(["image", "label"], pos=3.0, neg=1.0, num_samples=400)
    mixed.set_random_state(2)
    fg_share = np.mean([s["label"].meta["slice_index"] in (2, 5) for s in mixed(data)])
    assert 0.68 < fg_share < 0.82  # expected 0.75


def test_rand_slice_stackd_without_foreground_falls_back():
    data = _labelled(z_fg=())
    t = RandSliceStackd(["image", "label"], pos=1.0, neg=0.0, num_samples=5)
    t.set_random_state(0)
    assert len(t(data)) == 5
    with pytest.raises(ValueError, match="pos and neg"):
        RandSliceStackd(["image"], pos=0, neg=0)
    with pytest.raises(ValueError, match="label"):
        RandSliceStackd(["image"], label_key="label")({"image": data["image"]})


# ------------------------------------------------------------------------------------------ RemapLabels
def test_remap_labels_maps_and_zeroes_the_rest():
    lab = torch.tensor([[[[0, 1, 5, 7, 300]]]], dtype=torch.int32)
    out = RemapLabels({5: 1, "1": 2})(lab)
    assert out.tolist() == [[[[0, 2, 1, 0, 0]]]]
    assert out.dtype == torch.int32
    assert lab.tolist() == [[[[0, 1, 5, 7, 300]]]]  # input untouched


def test_remap_labels_types_and_meta():
    arr = np.array([[[[3, 3, 4]]]], dtype=np.uint8)
    np.testing.assert_array_equal(RemapLabels({3: 1})(arr), [[[[1, 1, 0]]]])
    vol = make_volume(torch.tensor(arr), np.diag([2.0, 2.0, 2.0, 1.0]))
    out = RemapLabelsd("label", {4: 9})({"label": vol})["label"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, vol.affine)
    assert out.tolist() == [[[[0, 0, 9]]]]
    big = RemapLabels({3: 400})(torch.tensor(arr))
    assert big.dtype == torch.int64 and int(big.max()) == 400  # uint8 would overflow
    assert RemapLabels({2: 1})(torch.tensor([2.0, 3.0])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="integer"):
        RemapLabels({2: 1})(torch.tensor([2.5]))
    with pytest.raises(ValueError):
        RemapLabels({-1: 1})


def test_remap_totalsegmentator_labels_by_name(data_dir):
    ts = data_dir / "totalsegmentator"
    names = json.loads((ts / "class_map_total_and_total_mr.json").read_text())["total"]
    target = {"1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left"}
    mapping = mapping_from_names(names, target)
    assert mapping == {5: 1, 1: 2, 2: 3, 3: 4}
    src = np.asarray(nib.load(str(ts / "example_seg.nii.gz")).dataobj).astype(np.int32)
    out = RemapLabels(mapping)(src[None])[0]
    for s, t in mapping.items():
        assert np.count_nonzero(out == t) == np.count_nonzero(src == s)
    assert np.count_nonzero(out) == sum(np.count_nonzero(src == s) for s in mapping)
    with pytest.raises(ValueError, match="not found"):
        mapping_from_names(names, {"1": "no_such_organ"})


# ------------------------------------------------------------------------------------------ M2FMedReader
def test_reader_loads_nifti_through_io_layer(data_dir):
    path = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    ref = nib.load(str(path))
    reader = M2FMedReader()
    assert reader.verify_suffix(str(path)) and not reader.verify_suffix("notes.txt")
    out = Compose([LoadImaged(["image", "label"], reader=M2FMedReader, image_only=True)])(
        {"image": str(path), "label": str(data_dir / "totalsegmentator" / "example_seg.nii.gz")}
    )
    img = out["image"]
    assert img.shape == (1, *ref.shape)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-5)
    np.testing.assert_allclose(img[0].numpy(), ref.get_fdata(dtype=np.float32), atol=1e-3)
    assert img.meta["original_channel_dim"] == 0 and img.meta["space"] == "RAS"
    assert out["label"].shape == img.shape


def test_reader_loads_dicom_series_folder(data_dir):
    from m2f_med.io import load_dicom_series

    folder = data_dir / "tcia" / "crlm_liver_mets_ct_noseg" / "CRLM-CT-1004" / "ct_dicom"
    img = LoadImaged("image", reader=M2FMedReader, image_only=True)({"image": str(folder)})["image"]
    ref = load_dicom_series(folder)
    assert img.shape == ref.shape == (1, 512, 512, 41)
    assert torch.equal(img.as_tensor(), ref.as_tensor())
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy(), atol=1e-9)
    assert img.meta["SeriesInstanceUID"] == ref.meta["SeriesInstanceUID"]
    assert img.meta["modality"] == "CT"
