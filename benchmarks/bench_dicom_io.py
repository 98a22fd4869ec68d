"""Speed of DICOM discovery and series loading (not a test; prints numbers).

    .venv/bin/python benchmarks/bench_dicom_io.py [--files 3000]

1. ``index_dicom_tree`` over the whole real-data folder (mixed DICOM / NIfTI / text, nested, DICOMDIRs).
2. ``index_dicom_tree`` over a generated tree of ``--files`` small CT files in 30 series (headers only).
3. ``load_dicom_series`` on a few real series (decode + rescale + geometry).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from m2f_med.data import data_dir  # noqa: E402
from m2f_med.io.dicom_index import index_dicom_tree  # noqa: E402
from m2f_med.io.dicom_series import load_dicom_series  # noqa: E402


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    data = data_dir(required=True)

    idx, dt = _timed(index_dicom_tree, data)
    n = sum(s.n_instances for s in idx) + len(idx.skipped) + len(idx.dicomdirs)
    print(f"index real data: {n} files, {len(idx)} series, {dt:.2f} s ({1000 * dt / n:.2f} ms/file)")

    from dicom_factory import write_slice  # the tests' generator
    from pydicom.uid import generate_uid

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        px = np.zeros((64, 64), np.int16)
        per_series = max(1, args.files // 30)
        for s in range(30):
            uid = generate_uid()
            for k in range(per_series):
                write_slice(root / f"p{s % 3}" / f"s{s}" / f"{k:05d}", px, (0, 0, float(k)), series_uid=uid)
        idx, dt = _timed(index_dicom_tree, root)
        n = 30 * per_series
        print(f"index generated tree: {n} files, {len(idx)} series, {dt:.2f} s ({1000 * dt / n:.2f} ms/file)")

    for rel in (
        "totalsegmentator/example_ct_dicom",
        "tcia/crlm_liver_mets_ct_noseg/CRLM-CT-1004/ct_dicom",
        "dicom_edge_cases/dcm_qa_ct_GE_gantry_tilt/In/GE",
        "dicom_edge_cases/dcm_qa_enhanced_mr/In/Philips/IM_0027_fMAP.dcm",
    ):
        vol, dt = _timed(load_dicom_series, data / rel)
        print(f"load {rel}: {tuple(vol.shape[1:])} in {dt:.2f} s, {len(vol.meta['problems'])} problems")


if __name__ == "__main__":
    main()
