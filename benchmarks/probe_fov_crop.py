"""Issue 11: why does the MSD spleen crop score ~0? The shipped model on crops and variants (spleen Dice).

Run: ``python benchmarks/probe_fov_crop.py`` (shipped model, CPU, about a minute). Results: bundle README.
"""
import numpy as np
import torch

from m2f_med.data import data_dir
from m2f_med.inference.bundle_model import load_bundle
from m2f_med.inference.predict import DEFAULT_BUNDLE
from m2f_med.inference.volume import predict_volume
from m2f_med.io import load_volume
from m2f_med.io.volume import make_volume

torch.set_num_threads(1)
D = str(data_dir(required=True)) + '/'
model = load_bundle(DEFAULT_BUNDLE, device='cpu')
SPLEEN = [k for k, v in model.labels.items() if v == 'spleen'][0]
def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
def run(name, vol, ref):
    m, ex = predict_volume(vol, model, postprocess=False)
    m = np.asarray(m[0])
    pred = m == SPLEEN
    where = {labels[int(c)]: int((m[ref] == c).sum()) for c in np.unique(m[ref])} if c_ok(ref) else {}
    print(f"{name:58s} spleen Dice {dice(pred, ref):.3f}  predicted spleen {pred.sum()} vox, ref {ref.sum()} vox; ref voxels predicted as {where}", flush=True)
def c_ok(ref): return ref.any()
labels = {0: 'background', **model.labels}
# 1. training CT, full field of view
ct = load_volume(D + 'totalsegmentator/example_ct.nii.gz')
seg = np.asarray(load_volume(D + 'totalsegmentator/example_seg_fast_force_split.nii.gz', label=True)[0])
ref = seg == 1
run('example_ct (training scan) full FOV', ct, ref)
# 2. same scan cropped to the MSD crop's in-plane size (13 cm) around its spleen
xs, ys, zs = np.nonzero(ref)
cx, cy = int(xs.mean()), int(ys.mean())
half = int(round(65 / 3.0))
box = (slice(max(cx - half, 0), cx + half), slice(max(cy - half, 0), cy + half), slice(zs.min(), zs.max() + 1))
aff = np.asarray(ct.affine).copy()
aff[:3, 3] = aff[:3, :3] @ np.array([box[0].start, box[1].start, box[2].start]) + aff[:3, 3]
crop = make_volume(ct[0][box][None].clone(), aff, modality='CT')
run('example_ct cropped to 13 cm around its spleen', crop, ref[box])
# 3. MSD crop as is, and shifted -40 HU (its spleen is contrast-enhanced: 85 HU vs ~45 unenhanced)
msd = load_volume(D + 'ivadomed_msd_spleen_and_spinalcord/ct_scan/sub-spleen2/ct/sub-spleen2_ct.nii.gz')
mref = np.asarray(load_volume(D + 'ivadomed_msd_spleen_and_spinalcord/ct_scan/derivatives/labels/sub-spleen2/ct/sub-spleen2_ct_seg-manual.nii.gz', label=True)[0]) > 0
run('MSD crop (13 cm, 5 mm slices, contrast)', msd, mref)
shifted = make_volume((msd[0] - 40.0)[None], np.asarray(msd.affine), modality='CT')
run('MSD crop, -40 HU', shifted, mref)
print('MSD spleen mean HU', float(msd[0][torch.from_numpy(mref)].mean()), 'training spleen mean HU', float(ct[0][torch.from_numpy(ref)].mean()))
