"""Batch behaviour an engineer expects (issue 12): unwritable formats are warnings, image files inside
study trees are segmented, SIGINT/SIGTERM leave a run report, and an index makes output folders findable.

Networks are the ``LabelStub`` of ``test_predict_bundle`` (fast, exact), inputs are real files.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_predict_bundle import make_test_bundle, stub_module_dir

from m2f_med.inference.predict import predict

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def stub_bundle(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(stub_module_dir(tmp_path)))
    return make_test_bundle(tmp_path / "bundle", k=1)


def test_seg_for_a_series_without_uids_is_a_warning_and_the_rest_is_written(data_dir, stub_bundle, tmp_path):
    """The TotalSegmentator DICOM sample has empty Study/SeriesInstanceUIDs: no SEG can reference it."""
    series = data_dir / "totalsegmentator" / "example_ct_dicom"
    report = predict([series], tmp_path / "out", bundle=stub_bundle, formats="nifti,dicom-seg", statistics=True,
                     quiet=True)
    (rec,) = [r for r in report["series"] if r["status"] != "skipped"]
    assert rec["status"] == "done", rec
    assert any(w.startswith("dicom-seg not written") for w in rec["warnings"]), rec["warnings"]
    folder = tmp_path / "out" / rec["key"]
    assert "mask.seg.dcm" not in rec["files"] and not (folder / "mask.seg.dcm").exists()
    assert {"mask.nii.gz", "labels.json", "statistics.json"} <= set(rec["files"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(rec["files"] + ["done.json"])  # no orphans
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [r["status"] for r in index if r["output"] == rec["key"]] == ["done"]
    assert "dicom-seg not written" in next(r["message"] for r in index if r["output"] == rec["key"])


def test_image_files_in_a_study_tree_are_segmented_and_indexed(data_dir, stub_bundle, tmp_path):
    tree = tmp_path / "study"
    shutil.copytree(data_dir / "dcmqi" / "ct-3slice", tree / "dicom")
    shutil.copy(data_dir / "totalsegmentator" / "example_ct_sm.nii.gz", tree / "ct_sm.nii.gz")
    shutil.copy(data_dir / "totalsegmentator" / "example_seg.nii.gz", tree / "example_seg.nii.gz")
    (tree / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    report = predict([tree], out, bundle=stub_bundle, quiet=True, modality="CT")
    by_source = {Path(r["source"]).name: r for r in report["series"]}
    assert by_source["ct_sm.nii.gz"]["status"] == "done"
    assert by_source["example_seg.nii.gz"]["status"] == "skipped"
    assert "label map" in by_source["example_seg.nii.gz"]["reason"]
    assert by_source["dicom"]["status"] == "done"
    unreadable = {Path(u["path"]).name for u in report["unreadable_files"]}
    assert "notes.txt" in unreadable and not unreadable & {"ct_sm.nii.gz", "example_seg.nii.gz"}
    nifti_out = out / by_source["ct_sm.nii.gz"]["key"]
    assert nib.load(nifti_out / "mask.nii.gz").shape == nib.load(tree / "ct_sm.nii.gz").shape
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["source"] for r in rows} == {r["source"] for r in report["series"]}
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 2 and all((out / r["output"] / "mask.nii.gz").is_file() for r in done)
    assert {r["modality"] for r in done if r["source"].endswith("dicom")} == {"CT"}
    assert json.loads((out / "index.json").read_text()) == rows  # the same table in both forms


def _small_cts(folder: Path, n: int) -> list[Path]:
    """``n`` tiny NIfTI volumes in HU-like steps (0, 100, 200), ``c0.nii.gz ...``."""
    paths = []
    for i in range(n):
        lab = np.random.default_rng(i).integers(0, 3, size=(16, 12, 6))
        p = folder / f"c{i}.nii.gz"
        nib.save(nib.Nifti1Image((lab * 100.0).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), str(p))
        paths.append(p)
    return paths


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_writes_its_report(tmp_path, sig):
    slow = make_test_bundle(tmp_path / "slow", k=1, delay=0.25)
    stub_module_dir(tmp_path)
    inputs = _small_cts(tmp_path, 4)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stubmods"), str(REPO)])}
    cmd = [sys.executable, "-m", "m2f_med", "predict", *map(str, inputs), "-o", str(out), "--bundle", str(slow),
           "--slab-size", "2", "--modality", "CT", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*/done.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no series finished in time"
            time.sleep(0.02)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode()
    assert rc == 130 and "Traceback" not in err, err
    report = json.loads((out / "run_report.json").read_text())
    assert report["interrupted"] == ("SIGTERM" if sig == signal.SIGTERM else "SIGINT")
    assert report["finished"] is None
    done = [r for r in report["series"] if r["status"] == "done"]
    assert 1 <= len(done) < 4 and report["summary"]["done"] == len(done)
    assert all((out / r["key"] / "done.json").is_file() for r in done)


def test_a_signal_right_after_done_json_still_reports_that_series_done(stub_bundle, tmp_path, monkeypatch):
    """The race seen under load: Ctrl-C lands between a series' done.json and its record in the report."""
    predict_module = importlib.import_module("m2f_med.inference.predict")  # the package attribute is the function

    inputs = _small_cts(tmp_path, 2)
    real_write = predict_module._write_json

    def write_then_interrupt(path, data):
        real_write(path, data)
        if Path(path).name == predict_module.DONE_NAME:
            raise KeyboardInterrupt  # where a signal handler would raise it

    monkeypatch.setattr(predict_module, "_write_json", write_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict(inputs, out, bundle=stub_bundle, quiet=True, modality="CT")
    report = json.loads((out / "run_report.json").read_text())
    assert report["interrupted"] == "SIGINT" and report["finished"] is None
    done = [r for r in report["series"] if r["status"] == "done"]
    assert len(done) == 1 and (out / done[0]["key"] / "done.json").is_file()
    assert report["summary"]["done"] == 1
    assert len(list(out.glob("*/done.json"))) == 1  # the second series was never started
