"""Acceptance: model -> paint -> DICOM-SEG -> reopen keeps ids, names, colours and voxels (real CT, dcmqi).

Also: the preview PNG and napari show every label in the same RGB (both read back here).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from napari_m2f_med._layers import layer_info
from napari_m2f_med._segment_widget import SegmentWidget

PLUGIN = "m2f-med"


def _rgb255(layer, value):
    return np.rint(np.asarray(layer.colormap.map(np.array([value]))[0][:3]) * 255).astype(int)


def test_model_paint_seg_reopen_keeps_ids_names_colours_voxels(make_napari_viewer, qtbot, data_dir, threshold_bundle,
                                                                 tmp_path):
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(data_dir / "dcmqi" / "ct-3slice"), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    widget.bundle_edit.setText(str(threshold_bundle))
    widget.run(image)
    qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
    labels = widget.result_layer
    predicted = np.array(labels.data, copy=True)
    assert {1, 2} <= set(np.unique(predicted))

    # edit "liver" (1): erase a disc inside it; leave "spleen" (2) alone; draw a new structure 5 by hand, so
    # label values 3 and 4 are missing (segment numbers 1, 2, 3 must still come back as 1, 2, 5)
    from scipy import ndimage

    inner = ndimage.binary_erosion(predicted == 1, np.ones((1, 5, 5)))
    z, y, x = np.argwhere(inner)[len(np.argwhere(inner)) // 2]
    labels.preserve_labels = False
    labels.brush_size = 3
    labels.paint((z, y, x), 0)
    assert (np.asarray(labels.data) != predicted).any()
    hand = np.zeros(predicted.shape, bool)
    hand[0:3, 10:20, 10:25] = True
    labels.data_setitem(np.nonzero(hand), 5)
    features = labels.features.copy()
    features.loc[len(features)] = {"index": 5, "name": "inferior_vena_cava", "confidence": np.nan}
    labels.features = features
    painted = np.array(labels.data, copy=True)
    names = {1: "liver", 2: "spleen", 5: "inferior_vena_cava"}
    colours = {v: _rgb255(labels, v) for v in names}

    out = tmp_path / "edited.dcm"
    assert labels.save(str(out), plugin=PLUGIN) == [str(out)]

    # the file itself, read with highdicom alone
    seg = hd.seg.segread(out)
    bundle_name = "threshold_bundle"
    descs = {int(seg.get_segment_description(n).SegmentDescription.split()[-1]): seg.get_segment_description(n)
             for n in seg.segment_numbers}
    assert sorted(descs) == [1, 2, 5] and seg.segment_numbers == [1, 2, 3]
    assert descs[1].SegmentAlgorithmType == "SEMIAUTOMATIC"  # the model's liver, edited by hand
    assert descs[2].SegmentAlgorithmType == "AUTOMATIC"  # untouched
    assert descs[5].SegmentAlgorithmType == "MANUAL"  # drawn by hand
    for v in (1, 2):
        alg = descs[v].SegmentationAlgorithmIdentificationSequence[0]
        assert alg.AlgorithmName.startswith(bundle_name) and alg.AlgorithmFamilyCodeSequence[0].CodeMeaning
    for v, d in descs.items():
        assert d.SegmentLabel == names[v]
        rgb = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb(clip=True)
        assert np.abs(np.subtract(rgb, colours[v])).max() <= 1, (v, rgb, colours[v])
    assert descs[5].SegmentedPropertyTypeCodeSequence[0].CodeValue != "85756007"  # IVC has its SNOMED code

    # reopened through the reader: the same ids, names, colours and voxels
    viewer.layers.remove(labels)
    (reopened,) = viewer.open(str(out), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(reopened.data), painted)
    got = dict(zip(reopened.features["index"], reopened.features["name"]))
    assert {k: got[k] for k in names} == names
    for v in names:
        assert np.abs(_rgb255(reopened, v) - colours[v]).max() <= 1
    # saving the reopened layer again keeps the types (the model is still named; liver stays edited)
    again = tmp_path / "again.dcm"
    reopened.save(str(again), plugin=PLUGIN)
    seg2 = hd.seg.segread(again)
    assert [seg2.get_segment_description(n).SegmentAlgorithmType for n in (1, 2, 3)] == [
        "SEMIAUTOMATIC", "AUTOMATIC", "MANUAL"]


def test_preview_and_napari_use_the_same_rgb(make_napari_viewer, qtbot, data_dir, threshold_bundle, tmp_path):
    import json

    from napari_m2f_med._layers import labels_layer_data
    from PIL import Image

    from m2f_med.inference.preview import render_preview

    viewer = make_napari_viewer()
    ts = data_dir / "totalsegmentator"
    (image,) = viewer.open(str(ts / "example_ct.nii.gz"), plugin=PLUGIN)
    volume = layer_info(image).volume
    from m2f_med.io.image_files import load_image_file

    seg = load_image_file(ts / "example_seg_fast_force_split.nii.gz", label=True)
    names = {int(k): v for k, v in json.loads((ts / "class_map_total_and_total_mr.json").read_text())["total"].items()}
    data, kwargs, _ = labels_layer_data(seg, names, reference=volume)
    labels = viewer.add_labels(data, **kwargs)
    arr = seg.numpy()[0]
    zs = [20, 45, 70]
    png = render_preview(volume, seg, tmp_path / "preview.png", modality="CT", names=names, slices=zs, alpha=1.0)
    pic = np.asarray(Image.open(png))
    # the preview's tiles are the (X, Y) slices turned to radiological view; compare colour sets per label
    checked = 0
    for v in np.unique(arr[..., zs]):
        if v == 0:
            continue
        want = _rgb255(labels, int(v))
        assert np.all(pic == want, axis=-1).sum() >= 1, (v, names.get(int(v)), want)
        checked += 1
    assert checked >= 10
    # and every label's preview colour equals napari's for the whole table
    from m2f_med.inference.preview import label_lut

    lut = label_lut(list(names), names)
    for v in names:
        np.testing.assert_array_equal(lut[v].astype(int), _rgb255(labels, v))
