"""Speed of the file-format side of m2f-med's io: RTSTRUCT rasterisation, DICOM-SEG write/read, NIfTI, inspect.

Cases (real data from the data folder, ``M2F_MED_DATA`` or ``../shared/data``):

* ``rtstruct-lung1``   LUNG1-001's 4 ROIs (both lungs, cord, GTV; 358 contours) onto its 512x512x134 grid,
                       ``fill="centre"`` and ``fill="boundary"``;
* ``rtstruct-sts``     STS_001's GTV onto its CT series (198x202x59);
* ``seg-write/read``   a 2-segment label map on the 41-slice 512x512 CRLM CT series → DICOM-SEG → back onto the
                       series grid (``read_dicom_seg`` with a reference);
* ``nifti-write/read`` the same label map as ``.nii.gz``;
* ``inspect-sts``      ``inspect_path`` of STS_001 (3 image series loaded, 3 RTSTRUCTs listed).

Usage::

    python benchmarks/bench_file_io.py [--repeat 3] [--json out.json]

Each case reports the best of ``--repeat`` wall-clock runs (seconds) with one torch thread. Nothing here is
a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    """Run every case and print one line per case (or write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from m2f_med.cli.inspect_cmd import inspect_path
    from m2f_med.data import data_dir
    from m2f_med.io import (
        load_image_file,
        load_volume,
        read_dicom_seg,
        rtstruct_masks,
        write_dicom_seg,
        write_nifti,
    )
    from m2f_med.io.volume import make_volume

    d = data_dir(required=True)
    lung = d / "tcia/nsclc_radiomics_LUNG1-001"
    lung_grid = load_image_file(lung / "derived_nifti/lung1_001_label.nii.gz", label=True)
    sts = d / "tcia/soft_tissue_sarcoma/STS_001"
    sts_ct = load_volume(sts / "CT/dicom/image")
    crlm = load_volume(d / "tcia/crlm_liver_mets_ct_noseg/CRLM-CT-1004/ct_dicom")
    arr = np.zeros(crlm.shape[1:], np.uint8)
    arr[100:400, 120:380, 5:35] = 1
    arr[200:260, 200:280, 12:20] = 2
    mask = make_volume(arr, crlm.affine.numpy())

    results: dict[str, float] = {}
    results["rtstruct-lung1-centre"] = _best(
        lambda: rtstruct_masks(lung / "rtstruct/RS_LUNG1-001.dcm", lung_grid), args.repeat)
    results["rtstruct-lung1-boundary"] = _best(
        lambda: rtstruct_masks(lung / "rtstruct/RS_LUNG1-001.dcm", lung_grid, fill="boundary"), args.repeat)
    results["rtstruct-sts"] = _best(lambda: rtstruct_masks(sts / "CT/dicom/mask/RS.dcm", sts_ct), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        seg = Path(tmp) / "m.dcm"
        nii = Path(tmp) / "m.nii.gz"
        results["seg-write-41x512x512-2seg"] = _best(
            lambda: write_dicom_seg(mask, crlm, seg, labels={1: "liver", 2: "tumour"}), args.repeat)
        results["seg-read-onto-series"] = _best(lambda: read_dicom_seg(seg, crlm), args.repeat)
        results["nifti-write-label"] = _best(lambda: write_nifti(mask, nii), args.repeat)
        results["nifti-read-label"] = _best(lambda: load_image_file(nii, label=True), args.repeat)
    results["inspect-sts-folder"] = _best(lambda: inspect_path(sts), args.repeat)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for name, seconds in results.items():
        print(f"{name:32s} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
