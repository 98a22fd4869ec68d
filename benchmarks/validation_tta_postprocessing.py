"""Validation-only choices for the shipped model: flip TTA (off / LR+swap / LR+AP with swap) and largest-component
post-processing, on the shipped model's validation cases (dcmqi 3-slice liver, MSD spleen crop). Never the test scan.

Run: ``python benchmarks/validation_tta_postprocessing.py``. Results: bundle README.
"""
import numpy as np
import torch

from m2f_med.bundle.label_io import load_label
from m2f_med.data import data_dir
from m2f_med.inference.bundle_model import load_bundle
from m2f_med.inference.postprocessing import postprocess_label
from m2f_med.inference.predict import DEFAULT_BUNDLE
from m2f_med.inference.volume import predict_volume
from m2f_med.io import load_volume

torch.set_num_threads(1)
D = str(data_dir(required=True)) + '/'
model = load_bundle(DEFAULT_BUNDLE, device='cpu')
ids = {v: k for k, v in model.labels.items()}
cases = [('dcmqi liver', D + 'dcmqi/ct-3slice', D + 'dcmqi/seg_dicom/liver.dcm', 'liver'),
         ('MSD spleen', D + 'ivadomed_msd_spleen_and_spinalcord/ct_scan/sub-spleen2/ct/sub-spleen2_ct.nii.gz',
          D + 'ivadomed_msd_spleen_and_spinalcord/ct_scan/derivatives/labels/sub-spleen2/ct/sub-spleen2_ct_seg-manual.nii.gz', 'spleen')]
variants = {'no TTA': {}, 'flip LR (swap) + AP': {'flip_tta': True}, 'flip LR (swap) only': {'flip_tta': True, 'tta_flips': [0]}}
for name, img, lab, organ in cases:
    vol = load_volume(img)
    ref, _ = load_label(lab, vol)
    ref = np.asarray(ref[0]) > 0
    for vname, opts in variants.items():

        m, _ = predict_volume(vol, model, postprocess=False, **opts)
        m = np.asarray(m[0])
        pred = m == ids[organ]
        d = 2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1)
        line = f"{name:12s} {vname:22s} {organ} Dice {d:.3f}"
        if vname == 'no TTA':
            pp, _ = postprocess_label(m, voxel_volume_mm3=abs(float(np.linalg.det(np.asarray(vol.affine)[:3, :3]))), keep_largest=True)
            pp = pp == ids[organ]
            line += f"; + largest component per class: {2 * (pp & ref).sum() / max(pp.sum() + ref.sum(), 1):.3f}"
        print(line, flush=True)
