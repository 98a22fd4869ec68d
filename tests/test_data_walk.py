"""Acceptance: every file under the real-data folder goes through ``inspect`` and ``convert`` with exit code
0, 1 or 2 and, on failure, one-line ``m2f-med: error: ...`` messages only - never a traceback.

Kept to about a minute: ``inspect`` runs once per top folder (reading every DICOM header and loading every
image series there), once per non-DICOM file (image files are loaded, other files are refused), and
``convert`` once per image series (``--series``), per SEG/RTSTRUCT and per image file (uncompressed .nii).
"""

from __future__ import annotations

import json

import pytest

from m2f_med.cli import main
from m2f_med.io.image_files import image_format
from m2f_med.io.loader import dicom_object_kind


def _run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except BaseException as err:  # noqa: BLE001 - anything escaping main() is what a user would see as a traceback
        pytest.fail(f"m2f-med {' '.join(map(str, args))}: {type(err).__name__} escaped: {err}")
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "Traceback" not in out.out, args
    for line in out.err.splitlines():
        # every line on stderr is one of ours (errors, notes, the chosen series), or a candidate listing
        assert line.startswith(("m2f-med: ", "  ")), (args, line)
    assert code in (0, 1, 2), (args, code)
    if code == 2:
        assert sum(line.startswith("m2f-med: error: ") for line in out.err.splitlines()) == 1, (args, out.err)
    return code, out.out, out.err


def test_inspect_and_convert_never_print_a_traceback(data_dir, tmp_path, capsys):
    tops = sorted(p for p in data_dir.iterdir() if p.is_dir())
    assert len(tops) >= 10
    codes: dict[str, int] = {}
    n_files = n_series = 0
    for top in tops:
        code, out, _ = _run(capsys, "inspect", top, "--json")
        codes[f"inspect {top.name}"] = code
        report = json.loads(out) if code != 2 else {"studies": []}  # 2: no DICOM there
        for st in report["studies"]:
            for s in st["series"]:
                if s["object"] == "image" and s["excluded"] is None:
                    n_series += 1
                    code, _, _ = _run(capsys, "convert", top, "--series", s["series_uid"], "-o", tmp_path / "s.nii")
                    codes[f"series {s['folder']}"] = code
        for f in sorted(p for p in top.rglob("*") if p.is_file()):
            n_files += 1
            kind = None if image_format(f) is not None else dicom_object_kind(f)
            if kind == "image":
                continue  # read with its series above
            if kind in ("SEG", "RTSTRUCT"):
                codes[str(f)] = _run(capsys, "convert", f, "-o", tmp_path / "o.nii")[0]
                continue
            codes[str(f)] = _run(capsys, "inspect", f)[0]
            if image_format(f) is not None:
                codes[f"convert {f}"] = _run(capsys, "convert", f, "-o", tmp_path / "o.nii")[0]
    assert n_files > 900 and n_series > 30
    # the walk did real work: most image files and series convert
    assert sum(c == 0 for c in codes.values()) > 150, codes
