"""``m2f-med convert``: volumes, RTSTRUCTs and SEGs to NIfTI; label maps to DICOM-SEG.

The output suffix decides the direction:

* ``m2f-med convert PATH -o OUT.nii.gz [--series UID] [--modality CT] [--label]``: an image file, a DICOM
  file's series or a DICOM folder's main series (``select_series`` rules; the chosen series is named on
  stderr, and with several equally good series the command refuses and lists them) → NIfTI.
* ``m2f-med convert RS.dcm --reference SERIES -o OUT.nii.gz``: an RTSTRUCT → label map on the reference
  grid (one label per ROI; ``--fill boundary`` for the rt-utils/OpenCV convention). ``--reference`` is
  required. The ROI / segment names go to ``OUT.labels.json`` beside the NIfTI (``m2f_med.io.label_names``).
* ``m2f-med convert SEG.dcm [--reference SERIES] -o OUT.nii.gz``: a DICOM-SEG → label map (segment numbers)
  on the reference grid, or on the SEG's own grid without ``--reference``.
* ``m2f-med convert MASK.nii.gz --reference SERIES_DIR -o OUT.dcm [--labels labels.json]``: a label map →
  DICOM-SEG referencing the series' instances (like dcmqi's ``itkimage2segimage``). ``labels.json`` maps
  label values to names (``{"1": "liver", "2": "spleen"}``; keys that are not integers, like ``"_note"``,
  are ignored); the names choose the SNOMED CT codes. Without ``--labels`` the names come from the mask's
  ``MASK.labels.json`` sidecar (or a ``labels.json`` of ours in its folder), as ``convert`` and napari write it.

For RTSTRUCT/SEG input the label names are printed to stdout (``<id>\\t<name>``). Every failure is one
line ``m2f-med: error: <path>: <message>`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "read_label_names"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``convert`` on the ``m2f-med`` parser."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a volume / RTSTRUCT / SEG to NIfTI, or a label map to DICOM-SEG",
        description="Convert to NIfTI (.nii, .nii.gz) or, from a label map, to DICOM-SEG (.dcm).",
    )
    parser.add_argument("path", type=Path, help="image file, DICOM file or folder, RTSTRUCT, SEG, or label map")
    parser.add_argument("-o", "--output", type=Path, required=True, help="OUT.nii.gz, OUT.nii or OUT.dcm")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to take from a folder")
    parser.add_argument("--modality", help="only consider series of this Modality (CT, MR, PT, ...)")
    parser.add_argument("--reference", type=Path, help="image series (or file) giving the grid / the source instances")
    parser.add_argument("--reference-series", metavar="UID", help="SeriesInstanceUID within --reference")
    parser.add_argument("--labels", type=Path, help="JSON {label value: name} for DICOM-SEG output")
    parser.add_argument("--label", action="store_true", help="the input image file is a label map (keep integers)")
    parser.add_argument("--volume-index", type=int, help="volume to take from a 4-D image file")
    parser.add_argument("--fill", choices=("centre", "boundary"), default="centre",
                        help="RTSTRUCT polygon fill rule (default centre: pixel centres inside)")
    parser.add_argument("--manual", action="store_true", help="DICOM-SEG: segments are MANUAL, not AUTOMATIC")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``convert``; returns 0, raises ``VolumeError`` (→ exit 2) on bad input."""
    from m2f_med.io.dicom_warnings import collect_pydicom_warnings

    _PRINTED.clear()
    with collect_pydicom_warnings() as pydicom_warnings:  # one counted line per message, not one per element
        try:
            return _convert(args)
        finally:
            for line in pydicom_warnings.lines():
                # the same message while indexing the folder as in the loaded series' problems: say it once
                if not any(line.split("): ", 1)[-1] in note for note in _PRINTED):
                    print(f"m2f-med: note: {line}", file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    from m2f_med.io.errors import VolumeError

    out: Path = args.output
    name = out.name.lower()
    _refuse_overwriting_inputs(out, [p for p in (args.path, args.reference, args.labels) if p is not None])
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _to_nifti(args)
        if name.endswith(".dcm"):
            return _to_seg(args)
    except VolumeError:
        raise
    except (ValueError, RuntimeError, KeyError) as err:  # a library's own error: keep it to one line
        raise VolumeError(args.path, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    raise VolumeError(out, "output must end in .nii, .nii.gz (NIfTI) or .dcm (DICOM-SEG)")


def read_label_names(path: Path) -> dict[int, str]:
    """Read ``{label value: name}`` from a JSON object; non-integer keys (``"_note"``) are ignored.

    Args:
        path: a JSON file such as ``{"0": "background", "1": "liver"}``.

    Returns:
        ``{int: str}`` without label 0.

    Raises:
        VolumeError: the file is missing or not a JSON object.
    """
    from m2f_med.io.errors import VolumeError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VolumeError(path, "labels file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VolumeError(path, f"not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise VolumeError(path, 'labels JSON must be an object like {"1": "liver"}')
    names: dict[int, str] = {}
    for key, value in data.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            continue
        if k == 0:
            continue
        if isinstance(value, dict):  # {"1": {"name": "liver", ...}}
            value = value.get("name", "")
        names[k] = str(value)
    return names


def _to_nifti(args: argparse.Namespace) -> int:
    from m2f_med.io.dicom_seg import read_dicom_seg
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.label_names import write_label_names_beside
    from m2f_med.io.loader import dicom_object_kind, load_volume
    from m2f_med.io.rtstruct import load_rtstruct
    from m2f_med.io.writers import write_nifti

    kind = dicom_object_kind(args.path) if args.path.is_file() else None
    if kind in ("RTSTRUCT", "SEG"):
        if args.reference is None and kind == "RTSTRUCT":
            raise VolumeError(args.path, "an RTSTRUCT needs --reference (the image series whose grid to draw on)")
        reference = (
            load_volume(args.reference, series_uid=args.reference_series, modality=args.modality)
            if args.reference is not None else None
        )
        if kind == "RTSTRUCT":
            label, names = load_rtstruct(args.path, reference, fill=args.fill)
        else:
            label, names = read_dicom_seg(args.path, reference)
        _refuse_overwriting_inputs(args.output, [], reference)
        write_nifti(label, args.output, label=True)
        # NIfTI cannot hold names: the sidecar lets NIfTI -> SEG (and napari) name the structures again
        write_label_names_beside(args.output, names)
        for k, v in names.items():
            print(f"{k}\t{v}")
        _report_problems(label)
        return 0
    vol = load_volume(args.path, series_uid=args.series, modality=args.modality, label=args.label,
                      volume_index=args.volume_index)
    if vol.meta.get("source_format") == "dicom":
        print(
            f"m2f-med: series {vol.meta.get('SeriesInstanceUID', '')} ({vol.meta.get('modality', '')}, "
            f"{'x'.join(str(s) for s in vol.shape[-3:])} voxels)",
            file=sys.stderr,
        )
    _refuse_overwriting_inputs(args.output, [], vol)
    write_nifti(vol, args.output, label=args.label or None)
    _report_problems(vol)
    return 0


def _to_seg(args: argparse.Namespace) -> int:
    from m2f_med.io.dicom_seg import write_dicom_seg
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.label_names import read_label_names_beside
    from m2f_med.io.loader import load_volume

    if args.reference is None:
        raise VolumeError(args.path, "DICOM-SEG output needs --reference (the DICOM series the mask was drawn on)")
    mask = load_volume(args.path, label=True, volume_index=args.volume_index)
    names = read_label_names(args.labels) if args.labels else read_label_names_beside(args.path)
    reference = load_volume(args.reference, series_uid=args.reference_series or args.series, modality=args.modality)
    _refuse_overwriting_inputs(args.output, [], mask, reference)
    write_dicom_seg(mask, reference, args.output, labels=names, algorithm=None if args.manual else "m2f-med")
    return 0


def _refuse_overwriting_inputs(out: Path, inputs, *volumes) -> None:
    """Inputs are never modified: refuse an output path that is one of the input files, or one of the files a
    loaded volume was read from (e.g. ``-o`` naming a slice of the ``--reference`` series)."""
    from m2f_med.io.errors import VolumeError

    paths = [Path(p) for p in inputs]
    for vol in volumes:
        paths += [Path(p) for p in (getattr(vol, "meta", None) or {}).get("source_paths", []) or []]
    target = out.resolve()
    for given in paths:
        if given.is_file() and (target == given.resolve() or (out.is_file() and out.samefile(given))):
            raise VolumeError(out, "the output is one of the input files; choose another output path")


_PRINTED: list[str] = []  # notes printed by this run of convert


def _report_problems(vol) -> None:
    for msg in vol.meta.get("problems", []):
        _PRINTED.append(msg)
        print(f"m2f-med: note: {msg}", file=sys.stderr)
