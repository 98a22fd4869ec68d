"""``m2f-med inspect PATH [--json]``: what is in a file or a DICOM folder, and what a loader would make of it.

For an image file (NIfTI, NRRD, MHA, ...) the volume is loaded and described. For a DICOM folder (or a DICOM
file: its series) every study and series is listed; each image series that the selection rules accept is
loaded with ``load_dicom_series``, so shape, spacing and problems are exactly what ``convert`` would produce.
SEG and RTSTRUCT objects list their segment / ROI names. Patient names and IDs are never read or printed.

JSON output (``--json``), schema ``m2f-med/inspect/1`` - fields are only ever added, never renamed::

    {
      "schema": "m2f-med/inspect/1",
      "path": str,
      "type": "image_file" | "dicom",
      "image": VOLUME | null,              # type "image_file"
      "studies": [                         # type "dicom" (empty for an image file)
        {"study_uid": str,
         "series": [
           {"series_uid": str, "series_number": int | null, "modality": str, "description": str,
            "object": "image" | "SEG" | "RTSTRUCT" | ...,   # "/"-joined if mixed
            "instances": int,              # files
            "images": int,                 # 2-D images (frames), localizers not counted
            "excluded": str | null,        # why the selection rules never pick it automatically
            "derived": bool,               # ImageType DERIVED: picked only when no ORIGINAL series is there
            "folder": str,                 # folder holding its files, relative to "path" ("." for the top)
            "main": bool,                  # the series `convert` / `load_volume` picks without --series
            "labels": {str(id): name} | null,   # SEG segment labels / RTSTRUCT ROI names
            "volume": VOLUME | null,
            "error": str | null}           # why loading failed
         ]}
      ],
      "main_series": str | null,
      "selection": str,                    # how the main series was chosen, or why none was
      "skipped_files": int,                # non-DICOM / unreadable files under the folder
      "loadable": bool                     # false when an image series (or the image file) cannot be loaded
    }
    VOLUME = {"format": str, "modality": str, "shape": [X, Y, Z],
              "spacing_mm": [sx, sy, sz],  # voxel steps: lengths of the affine's columns
              "plane_spacing_mm": float,   # distance between slice planes (differs from sz when the affine is
                                           # sheared: gantry tilt)
              "orientation": str,          # nibabel axis code of the RAS affine, e.g. "LPS"
              "affine": [[4 floats] x 4],  # voxel index -> RAS mm
              "dtype": str, "problems": [str]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "inspect_path", "SCHEMA"]

SCHEMA = "m2f-med/inspect/1"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``inspect`` on the ``m2f-med`` parser."""
    parser = subparsers.add_parser(
        "inspect",
        help="list the studies/series of a DICOM folder or describe an image file",
        description="Describe a file or DICOM folder: series, modality, shape, spacing (mm), orientation, "
        "affine and the problems a loader finds. No patient names or IDs are shown.",
    )
    parser.add_argument("path", type=Path, help="image file, DICOM file or folder")
    parser.add_argument("--json", action="store_true", help="print the stable JSON form (schema in docs/cli.md)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``inspect``; returns the exit code: 0, or 1 when an image series found cannot be loaded (each
    reason is printed); errors with the path itself propagate as ``VolumeError`` → exit 2."""
    from m2f_med.io.dicom_warnings import collect_pydicom_warnings
    from m2f_med.io.volume import array_volumes

    # describing needs no tensors: no torch / MONAI import, start-up well under 2 s
    with array_volumes(), collect_pydicom_warnings() as pydicom_warnings:
        report = inspect_path(args.path)
    for line in pydicom_warnings.lines():  # while indexing; those while loading are in each volume's problems
        print(f"m2f-med: note: {line}", file=sys.stderr)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_as_text(report))
    return 0 if report["loadable"] else 1


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Build the ``m2f-med/inspect/1`` report (see the module docstring) for a file or folder.

    Args:
        path: image file, DICOM file or DICOM folder.

    Returns:
        The report as a JSON-serialisable dict.

    Raises:
        VolumeError: the path does not exist, is neither an image file nor DICOM, or an image file cannot be
            read.
    """
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.image_files import image_format, load_image_file
    from m2f_med.io.loader import dicom_object_kind

    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "no such file or folder")
    report: dict[str, Any] = {
        "schema": SCHEMA, "path": str(p), "type": "dicom", "image": None, "studies": [],
        "main_series": None, "selection": "", "skipped_files": 0, "loadable": True,
    }
    if p.is_file() and image_format(p) is not None:
        report["type"] = "image_file"
        report["image"] = _volume_info(load_image_file(p))
        return report
    if p.is_file() and dicom_object_kind(p) is None:
        raise VolumeError(p, "not a supported image file (NIfTI, NRRD, MHA, GIPL) and not DICOM")
    _inspect_dicom(p, report)
    return report


def _inspect_dicom(p: Path, report: dict[str, Any]) -> None:
    from m2f_med.io.dicom_index import index_dicom_tree, read_header
    from m2f_med.io.dicom_series import load_dicom_series
    from m2f_med.io.errors import VolumeError
    from m2f_med.io.series_selection import select_series, series_exclusion

    if p.is_file():
        uid = str(read_header(p, ["SeriesInstanceUID"]).get("SeriesInstanceUID", "") or "")
        index = index_dicom_tree(p.parent)
        keep = index.get(uid) if uid else None
        if keep is None:
            index = index_dicom_tree(p)
        else:
            for st in index.studies.values():
                st.series = {k: v for k, v in st.series.items() if v is keep}
            index.studies = {k: v for k, v in index.studies.items() if v.series}
    else:
        index = index_dicom_tree(p)
    report["skipped_files"] = len(index.skipped)
    root = p.parent if p.is_file() else p
    try:
        chosen = select_series(index, modality=None)
        main = chosen.series_uid
        report["main_series"] = main
        n_img = sum(1 for s in index.series if series_exclusion(s, allow_derived=True) is None)
        report["selection"] = "the only image series" if n_img == 1 else f"chosen by the selection rules among {n_img}"
        if chosen.is_derived:
            report["selection"] += "; DERIVED, taken as no ORIGINAL series is there"
    except VolumeError as err:
        main = None
        report["selection"] = err.message.splitlines()[0].rstrip(":")
    for st in index.studies.values():
        series_out = []
        for s in st.series.values():
            kinds = "/".join(s.kinds) or "?"
            entry: dict[str, Any] = {
                "series_uid": s.series_uid, "series_number": s.series_number, "modality": s.modality,
                "description": s.description, "object": kinds, "instances": s.n_instances,
                "images": s.n_images, "excluded": series_exclusion(s, allow_derived=True),
                "derived": bool(s.is_derived), "folder": _folder_of(s.paths, root),
                "main": s.series_uid == main, "labels": None, "volume": None, "error": None,
            }
            if kinds in ("SEG", "RTSTRUCT"):
                entry["labels"] = _object_labels(s.paths[0], kinds)
            elif series_exclusion(s, allow_derived=True) is None:  # DERIVED images load, but are not picked
                try:
                    entry["volume"] = _volume_info(load_dicom_series(s))
                except VolumeError as err:
                    entry["error"] = err.message.splitlines()[0]
                    report["loadable"] = False
            series_out.append(entry)
        report["studies"].append({"study_uid": st.study_uid, "series": series_out})


def _folder_of(paths, root: Path) -> str:
    """The folder holding a series' files, relative to the inspected folder (absolute if outside it)."""
    import os

    try:
        common = Path(os.path.commonpath([str(Path(q).resolve().parent) for q in paths]))
        return str(common.relative_to(root.resolve())) if paths else "."
    except ValueError:  # another drive, or outside the inspected folder
        return str(Path(paths[0]).parent)


def _object_labels(path: Path, kind: str) -> dict[str, str] | None:
    from m2f_med.io.dicom_index import read_header
    from m2f_med.io.errors import VolumeError

    try:
        if kind == "SEG":
            ds = read_header(path, ["SegmentSequence"])
            return {str(int(s.SegmentNumber)): str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])}
        ds = read_header(path, ["StructureSetROISequence"])
        return {str(int(r.ROINumber)): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    except (VolumeError, ValueError, AttributeError):
        return None


def _volume_info(vol) -> dict[str, Any]:
    import numpy as np

    from m2f_med.io.volume import orientation_code

    affine = np.asarray(vol.affine, dtype=np.float64)
    return {
        "format": str(vol.meta.get("source_format", "")),
        "modality": str(vol.meta.get("modality", "")),
        "shape": [int(s) for s in vol.shape[-3:]],
        "spacing_mm": [round(float(v), 6) for v in vol.meta.get("spacing_mm", ())],
        "plane_spacing_mm": round(_plane_spacing(affine), 6),
        "orientation": orientation_code(affine),
        "affine": [[round(float(v), 6) for v in row] for row in affine],
        "dtype": str(vol.dtype).replace("torch.", ""),
        "problems": [str(x) for x in vol.meta.get("problems", [])],
    }


def _plane_spacing(affine) -> float:
    """Distance (mm) between neighbouring slice planes: the third column projected on the planes' normal.
    Equal to the third column's length unless the affine is sheared (gantry tilt)."""
    import numpy as np

    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    normal = np.cross(m[:, 0], m[:, 1])
    norm = float(np.linalg.norm(normal))
    return abs(float(m[:, 2] @ normal)) / norm if norm > 0 else float(np.linalg.norm(m[:, 2]))


def _as_text(report: dict[str, Any]) -> str:
    lines = []
    if report["type"] == "image_file":
        lines.append(f"{report['path']}: {report['image']['format']} image")
        lines.extend(_volume_lines(report["image"], "  "))
        return "\n".join(lines) + "\n"
    n_series = sum(len(st["series"]) for st in report["studies"])
    lines.append(f"{report['path']}: DICOM, {len(report['studies'])} studies, {n_series} series"
                 + (f", {report['skipped_files']} other files skipped" if report["skipped_files"] else ""))
    for st in report["studies"]:
        lines.append(f"study {st['study_uid']}")
        for s in st["series"]:
            tag = "  [main]" if s["main"] else ""
            lines.append(f"  series {s['series_uid']}  {s['modality'] or '?'}  {s['object']}  "
                         f"{s['instances']} files  {s['description']!r}{tag}")
            lines.append(f"    folder {s['folder']}")
            if s["excluded"]:
                lines.append(f"    not selectable: {s['excluded']}")
            elif s["derived"]:
                lines.append("    DERIVED: picked only when no ORIGINAL series is there")
            if s["labels"]:
                lines.append("    labels: " + ", ".join(f"{k}={v}" for k, v in s["labels"].items()))
            if s["volume"]:
                lines.extend(_volume_lines(s["volume"], "    "))
            if s["error"]:
                lines.append(f"    cannot load: {s['error']}")
    main = [s for st in report["studies"] for s in st["series"] if s["main"]]
    if main and main[0]["error"]:
        lines.append(f"main series: {main[0]['series_uid']} ({report['selection']}), but it cannot be loaded")
    else:
        lines.append(f"main series: {report['main_series'] or 'none'} ({report['selection']})")
    return "\n".join(lines) + "\n"


def _volume_lines(v: dict[str, Any], pad: str) -> list[str]:
    sp = " x ".join(f"{x:.4g}" for x in v["spacing_mm"])
    if v["spacing_mm"] and abs(v["plane_spacing_mm"] - v["spacing_mm"][-1]) > 1e-3:
        sp += (f" mm (voxel steps; the slice planes are {v['plane_spacing_mm']:.4g} mm apart: the slice step is "
               "tilted against them)")
    else:
        sp += " mm"
    out = [
        f"{pad}shape {'x'.join(str(s) for s in v['shape'])}  spacing {sp}  orientation {v['orientation']}  "
        f"{v['dtype']}" + (f"  modality {v['modality']}" if v["modality"] else ""),
        f"{pad}affine (voxel -> RAS mm): " + "; ".join(" ".join(f"{x:.4g}" for x in row) for row in v["affine"][:3]),
    ]
    out.extend(f"{pad}problem: {msg}" for msg in v["problems"])
    return out
