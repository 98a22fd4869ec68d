"""``m2f-med predict INPUT... -o OUTDIR``: batch segmentation of NIfTI files, DICOM series and study trees.

Thin over :func:`m2f_med.inference.predict.predict` (see there for the output layout, the run report and
resume semantics). Exit codes: 0 all series done (or skipped by the selection rules), 1 at least one series
failed (each reason is in ``OUTDIR/run_report.json``), 2 a usage error (bad bundle, unknown format).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``predict`` on the ``m2f-med`` parser."""
    p = subparsers.add_parser(
        "predict",
        help="segment NIfTI files, DICOM series or whole study trees with a bundle",
        description="Segment every series found in the inputs and write, per series, the mask (NIfTI and/or "
        "DICOM-SEG), labels.json and optionally statistics and a preview, plus one run_report.json. "
        "A failing series is recorded and the batch goes on; --resume redoes only what is missing.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="NIfTI/NRRD/MHA files, DICOM folders or study trees")
    p.add_argument("--sample", nargs="?", const="ct_dicom", default=None, choices=("ct_dicom", "ct"),
                   help="also segment a real sample CT (m2f_med.sample_data: ct_dicom (default), ct), taken from "
                   "the local data folder ($M2F_MED_DATA) or downloaded once with a checksum")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--bundle", type=Path, default=None, help="MONAI bundle folder (configs/inference.yaml)")
    p.add_argument("--formats", default="nifti", help="comma-separated: nifti, dicom-seg (default: nifti)")
    p.add_argument("--series-rule", default="per-study",
                   help="DICOM series to segment: per-study (default; the selection rules pick one per study), "
                   "all (every image series that passes the filters), or uid:UID1,UID2")
    p.add_argument("--modality", default=None, help="DICOM Modality to select (default: the bundle's); for NIfTI/NRRD files, which "
                   "state none, the modality they are (a CT model refuses a file that does not look like HU "
                   "unless --modality CT is given)")
    p.add_argument("--volume-index", type=int, default=None, metavar="N",
                   help="which volume (0-based) of a 4-D NIfTI/NRRD input to segment (DICOM inputs ignore it)")
    p.add_argument("--resume", action="store_true", help="skip series already finished with the same settings")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (ignored on CPU)")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (3x slower)")
    p.add_argument("--statistics", action="store_true", help="write statistics.json/.csv (mL, mean/std HU)")
    p.add_argument("--preview", action="store_true", help="write preview.png (axial slices with the mask)")
    p.add_argument("--save-probability", action="store_true",
                   help="write probability.nii.gz (uint8, highest foreground probability x 255)")
    p.add_argument("--no-postprocess", action="store_true", help="skip the bundle's label post-processing")
    p.add_argument("--slab-size", type=int, default=None, help="slices per slab (memory/speed trade-off)")
    p.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass")
    p.add_argument("--plan", default=None, choices=("auto", "whole-slice", "sliding-window"),
                   help="inference plan (default: the bundle's inference_plan): whole slices padded to 32 when "
                   "they fit the window budget, else sliding windows; see docs/performance.md")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"),
                   help="CPU network backend: onnx = ONNX Runtime (needs the [onnx] extra; exports once per input "
                   "shape, cached), auto = ONNX where an export is cached, else PyTorch (default), torch")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: one per usable core, shared among torchrun ranks)")
    p.add_argument("--from", dest="pull_from", default=None, metavar="URL_OR_AE",
                   help="pull --study from this PACS first (DICOMweb URL or AET@host:port) into OUTDIR/pulled")
    p.add_argument("--study", default=None, metavar="UID", help="StudyInstanceUID to pull (with --from)")
    p.add_argument("--push", default=None, metavar="URL_OR_AE",
                   help="store the DICOM-SEGs on this PACS afterwards (adds dicom-seg to --formats)")
    p.add_argument("--aet", default="M2FMED", help="our DICOM AE title for --from / --push over DIMSE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars, errors only")
    g.add_argument("-v", "--verbose", action="store_true", help="log each series")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``predict`` with parsed arguments; print a one-line summary; return the exit code."""
    from m2f_med.inference.predict import predict

    if args.quiet:
        logging.getLogger().setLevel(logging.ERROR)
    inputs = list(args.inputs)
    if args.sample:
        from m2f_med.sample_data import sample_ct_path

        inputs.append(str(sample_ct_path(args.sample)))
    if args.pull_from:
        from m2f_med.pacs.ops import pull

        if not args.study:
            print("m2f-med: error: --from needs --study UID", file=sys.stderr)
            return 2
        pulled = Path(args.output) / "pulled"
        pull(args.pull_from, args.study, pulled, aet=args.aet)
        inputs.append(str(pulled))
    if not inputs:
        print("m2f-med: error: give at least one INPUT, --sample or --from", file=sys.stderr)
        return 2
    if args.push:
        from m2f_med.pacs.target import parse_target

        parse_target(args.push)  # a bad address fails before inference
        if "dicom-seg" not in args.formats:
            args.formats += ",dicom-seg"
    try:
        report = predict(
            inputs, args.output, bundle=args.bundle, formats=args.formats, series_rule=args.series_rule,
            resume=args.resume, device=args.device, statistics=args.statistics, preview=args.preview,
            save_probability=args.save_probability, postprocess=not args.no_postprocess, amp=args.amp,
            amp_dtype=args.amp_dtype, flip_tta=args.tta, slab_size=args.slab_size,
            sw_batch_size=args.sw_batch_size, modality=args.modality, quiet=args.quiet, plan=args.plan,
            threads=args.threads, backend=args.backend, volume_index=args.volume_index,
        )
    except ValueError as err:
        from m2f_med.io.errors import VolumeError

        if isinstance(err, VolumeError):
            raise
        print(f"m2f-med: error: {err}", file=sys.stderr)
        return 2
    s = report["summary"]
    if not args.quiet:
        print(f"{s['done']} done, {s['resumed']} resumed, {s['skipped']} skipped, {s['failed']} failed; "
              f"report: {Path(args.output) / 'run_report.json'}")
    for r in report["series"]:
        if r["status"] == "failed":
            # the message, not the reason: reasons name input paths, which may hold patient identifiers
            print(f"m2f-med: failed: {r['key']}: {r.get('message') or r['reason']}", file=sys.stderr)
    if args.verbose:
        print(json.dumps(report["summary"]))
    if args.push:
        from m2f_med.pacs.ops import push
        from m2f_med.pacs.pipeline import seg_files
        from m2f_med.pacs.target import PacsError

        segs = seg_files(report, args.output)
        if not segs:
            raise PacsError(args.push, "nothing to push: no DICOM-SEG was written (see run_report.json)")
        n = push(args.push, segs, aet=args.aet)
        if not args.quiet:
            print(f"{n} DICOM-SEG(s) stored on {args.push}")
    return 1 if s["failed"] else 0
