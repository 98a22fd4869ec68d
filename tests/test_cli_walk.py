"""The CLI on every real input we have: ``inspect`` on each file and folder under the data folder and
``convert`` on each entry of ``dicom_edge_cases``; no traceback, and a failure is one ``m2f-med: error:``
line (a listing of candidate series may follow it, indented).

Calls ``main`` in-process, so an exception that would reach the console as a traceback fails the test with
the path that caused it. Cost: DICOM files outside ``dicom_edge_cases`` are taken one per folder (their
folders are inspected whole anyway); about two minutes on two cores.
"""

from __future__ import annotations

import contextlib
import io

from m2f_med.cli import main
from m2f_med.io.dicom_index import looks_like_dicom

EDGE = "dicom_edge_cases"


def _entries(root):
    edge = root / EDGE
    seen = set()
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_dir() or edge in p.parents or not looks_like_dicom(p):
            yield p
        elif p.parent not in seen:
            seen.add(p.parent)
            yield p


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _problem(path, argv):
    try:
        rc, out, err = _run(argv)
    except BaseException as e:  # what a user would see as a traceback
        return f"{path}: {argv[0]} raised {type(e).__name__}: {e}"
    if "Traceback" in out + err:
        return f"{path}: {argv[0]} printed a traceback"
    errors = [line for line in err.splitlines() if line.startswith("m2f-med: error")]
    # exit 2 is an error: exactly one line; inspect's exit 1 (a series cannot load) is a report on stdout
    if len(errors) > 1 or (rc == 2 and len(errors) != 1):
        return f"{path}: {argv[0]} exit {rc} without exactly one error line: {err[:300]!r}"
    return None


def test_inspect_and_convert_never_print_a_traceback_on_the_real_data(data_dir, tmp_path):
    entries = list(_entries(data_dir))
    assert len(entries) > 300  # the whole folder, not a corner of it
    problems = [_problem(p, ["inspect", str(p)]) for p in entries]
    edge = [p for p in entries if p == data_dir / EDGE or (data_dir / EDGE) in p.parents]
    problems += [_problem(p, ["convert", str(p), "-o", str(tmp_path / "out.nii.gz")]) for p in edge]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems[:20])
