"""Batch ``predict`` / ``m2f-med predict``: real DICOM and NIfTI inputs, bad studies, safe names, resume.

The networks are the identity-like ``LabelStub`` of ``test_predict_bundle`` (one-hot of the windowed
intensity), so the expected mask of a real CT is known exactly: ``round(clip(HU / 200, 0, 1) * 2)``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from test_predict_bundle import make_test_bundle, stub_module_dir

import m2f_med
from m2f_med.cli import main
from m2f_med.inference import load_bundle, predict_volume
from m2f_med.inference.predict import predict, series_key
from m2f_med.io import load_dicom_series
from m2f_med.io.image_files import load_image_file
from m2f_med.io.volume import make_volume

REPO = Path(__file__).resolve().parent.parent


def _expected(volume) -> np.ndarray:
    hu = volume[0].numpy()
    return np.round(np.clip(hu / 200.0, 0, 1) * 2).astype(np.uint8)


@pytest.fixture()
def stub_bundle(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(stub_module_dir(tmp_path)))
    return make_test_bundle(tmp_path / "bundle", k=1)


def test_dicom_and_nifti_masks_match_their_input_grid(data_dir, stub_bundle, tmp_path):
    dicom = data_dir / "tcia" / "crlm_liver_mets_ct_noseg"
    nifti = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    out = tmp_path / "out"
    report = predict([dicom, nifti], out, bundle=stub_bundle, formats="nifti,dicom-seg", statistics=True,
                     preview=True, quiet=True)
    assert report["summary"] == {"done": 2, "resumed": 0, "skipped": 0, "failed": 0}
    assert json.loads((out / "run_report.json").read_text())["summary"] == report["summary"]
    by_kind = {r["kind"]: r for r in report["series"]}

    # DICOM: the mask is on the series grid (shape and affine), voxel for voxel
    ref = load_dicom_series(dicom / "CRLM-CT-1004" / "ct_dicom")
    rec = by_kind["dicom"]
    assert rec["key"] == series_key(ref.meta["SeriesInstanceUID"])
    folder = out / rec["key"]
    img = nib.load(str(folder / "mask.nii.gz"))
    assert img.shape == tuple(ref.shape[1:])
    np.testing.assert_allclose(img.affine, ref.affine.numpy(), atol=1e-4)  # NIfTI stores float32
    np.testing.assert_array_equal(np.asarray(img.dataobj), _expected(ref))
    assert json.loads((folder / "labels.json").read_text()) == {"1": "liver", "2": "spleen"}

    # the DICOM-SEG references this series and decodes back to the same mask
    seg = pydicom.dcmread(folder / "mask.seg.dcm")
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.meta["SeriesInstanceUID"]
    assert seg.StudyInstanceUID == ref.meta["StudyInstanceUID"]
    refd = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refd <= set(ref.meta["SOPInstanceUIDs"]) and refd
    from m2f_med.io.dicom_seg import read_dicom_seg

    back, names = read_dicom_seg(folder / "mask.seg.dcm", reference=ref)
    np.testing.assert_array_equal(back[0].numpy(), _expected(ref))
    assert sorted(names.values()) == ["liver", "spleen"]

    stats = json.loads((folder / "statistics.json").read_text())["structures"]
    exp = _expected(ref)
    assert stats[0]["name"] == "liver" and stats[0]["voxels"] == int((exp == 1).sum())
    hu = ref[0].numpy()[exp == 1]
    assert stats[0]["mean_intensity"] == pytest.approx(float(hu.mean()), abs=0.01)
    assert stats[0]["intensity_unit"] == "HU"
    voxel_ml = abs(np.linalg.det(ref.affine.numpy()[:3, :3])) / 1000
    assert stats[0]["volume_ml"] == pytest.approx(stats[0]["voxels"] * voxel_ml, rel=1e-4)
    assert (folder / "statistics.csv").read_text().startswith("label,name,voxels,volume_ml")
    assert (folder / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # NIfTI: same checks against the file's own grid; no DICOM-SEG for a non-DICOM input
    rec = by_kind["file"]
    src = load_image_file(nifti)
    img = nib.load(str(out / rec["key"] / "mask.nii.gz"))
    np.testing.assert_allclose(img.affine, nib.load(str(nifti)).affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), _expected(src))
    assert "mask.seg.dcm" not in rec["files"] and any("not a DICOM" in w for w in rec["warnings"])
    assert rec["timings"]["inference_s"] > 0 and rec["slices_per_s"] > 0
    assert report["environment"]["device"] == "cpu" and report["bundle"]["labels"]["1"] == "liver"


def test_resampled_model_grid_comes_back_exactly_onto_the_input_grid(data_dir, stub_bundle):
    nifti = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"  # 3 mm voxels
    vol = load_image_file(nifti)
    model = load_bundle(stub_bundle)
    model.pixdim = [1.5, 1.5, -1]
    model.roi_size = [96, 96]
    mask, extras = predict_volume(vol, model)
    assert extras["path"] == "slab"
    assert mask.shape == vol.shape and torch.equal(mask.affine, vol.affine)
    # 2x in-plane upsampling on aligned grids: bilinear there and back is exact at the source voxels
    np.testing.assert_array_equal(mask[0].numpy(), _expected(vol))


def _tree_with_bad_series(data_dir: Path, root: Path) -> Path:
    sts = data_dir / "tcia" / "soft_tissue_sarcoma"
    tree = root / "tree"
    shutil.copytree(sts / "STS_001" / "CT" / "dicom", tree / "p1" / "ct")  # image series + RTSTRUCT
    shutil.copytree(sts / "STS_002" / "CT" / "dicom" / "image", tree / "p2" / "ct")
    bad = tree / "p3" / "ct"
    shutil.copytree(sts / "STS_003" / "CT" / "dicom" / "image", bad)
    victim = sorted(bad.iterdir())[10]
    with open(victim, "r+b") as f:  # cut the pixel data in half: a decode error when loading
        f.truncate(victim.stat().st_size // 2)
    (tree / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(300))
    return tree


def test_batch_goes_on_past_bad_studies(data_dir, stub_bundle, tmp_path, capsys):
    tree = _tree_with_bad_series(data_dir, tmp_path)
    out = tmp_path / "out"
    code = main(["predict", str(tree), "-o", str(out), "--bundle", str(stub_bundle), "-q"])
    assert code == 1  # one series failed
    report = json.loads((out / "run_report.json").read_text())
    status = {r["source"].split("/tree/")[1].split("/")[0] + ":" + r["modality"]: r for r in report["series"]}
    assert status["p1:CT"]["status"] == "done" and status["p2:CT"]["status"] == "done"
    assert status["p1:RTSTRUCT"]["status"] == "skipped" and "RTSTRUCT" in status["p1:RTSTRUCT"]["reason"]
    failed = status["p3:CT"]
    assert failed["status"] == "failed" and "decode" in failed["reason"]
    assert not (out / failed["key"] / "done.json").exists()
    assert report["summary"] == {"done": 2, "resumed": 0, "skipped": 1, "failed": 1}
    assert any(u["path"].endswith("junk.dcm") for u in report["unreadable_files"])
    for r in (status["p1:CT"], status["p2:CT"]):
        assert (out / r["key"] / "done.json").is_file() and (out / r["key"] / "mask.nii.gz").is_file()
    err = capsys.readouterr().err
    assert f"failed: {failed['key']}" in err and str(tmp_path) not in err  # no input paths on stderr


def test_output_names_never_come_from_tag_text(data_dir, stub_bundle, tmp_path, caplog):
    src = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_002" / "CT" / "dicom" / "image"
    series = tmp_path / "in" / "series"
    series.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())[:6]):
        ds = pydicom.dcmread(f)
        ds.PatientID = "../../x"
        ds.PatientName = "Doe^Jane"
        ds.SeriesDescription = "../../escape"
        ds.save_as(series / f"{i}.dcm")
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        report = predict(series, out, bundle=stub_bundle, formats=["nifti", "dicom-seg"], quiet=True)
    assert report["summary"]["done"] == 1
    key = report["series"][0]["key"]
    assert re.fullmatch(r"series-[0-9a-f]{16}", key)
    created = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert all(p.parts[0] in {"in", "out", "bundle", "stubmods"} for p in created)
    assert not (tmp_path / "x").exists() and not any("escape" in str(p) for p in created)
    assert "Doe" not in caplog.text and "../../x" not in caplog.text


def test_resume_skips_done_series_and_redoes_on_new_settings(stub_bundle, tmp_path):
    inputs = []  # synthetic NIfTI (no air): declared CT, else the CT check refuses them (test_modality.py)
    for i in range(3):
        lab = np.random.default_rng(i).integers(0, 3, size=(12, 10, 4))
        vol = make_volume(torch.tensor(lab * 100.0, dtype=torch.float32)[None], np.diag([2.0, 2.0, 3.0, 1.0]))
        p = tmp_path / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol[0].numpy(), vol.affine.numpy()), str(p))
        inputs.append(p)
    out = tmp_path / "out"
    first = predict(inputs, out, bundle=stub_bundle, quiet=True, modality="CT")
    assert first["summary"]["done"] == 3
    again = predict(inputs, out, bundle=stub_bundle, resume=True, quiet=True, modality="CT")
    assert again["summary"] == {"done": 0, "resumed": 3, "skipped": 0, "failed": 0}
    # a missing output file makes that series "not done"
    gone = out / first["series"][1]["key"] / "mask.nii.gz"
    gone.unlink()
    third = predict(inputs, out, bundle=stub_bundle, resume=True, quiet=True, modality="CT")
    assert [r["status"] for r in third["series"]] == ["resumed", "done", "resumed"] and gone.is_file()
    # different settings (statistics now on): everything is redone
    fourth = predict(inputs, out, bundle=stub_bundle, resume=True, statistics=True, quiet=True, modality="CT")
    assert fourth["summary"]["done"] == 3


def test_kill_and_resume(stub_bundle, tmp_path):
    slow = make_test_bundle(tmp_path / "slow", k=1, delay=0.25)
    inputs = []
    for i in range(5):
        lab = np.random.default_rng(10 + i).integers(0, 3, size=(16, 12, 6))
        p = tmp_path / f"c{i}.nii.gz"
        nib.save(nib.Nifti1Image((lab * 100.0).astype(np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), str(p))
        inputs.append((p, lab))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stubmods"), str(REPO)])}
    cmd = [sys.executable, "-m", "m2f_med", "predict", *[str(p) for p, _ in inputs], "-o", str(out),
           "--bundle", str(slow), "--slab-size", "2", "--statistics", "--modality", "CT", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*/done.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no series finished in time"
            time.sleep(0.02)
        time.sleep(0.3)  # somewhere inside the next series
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    assert 1 <= len(done_before) < 5

    report = predict([p for p, _ in inputs], out, bundle=slow, resume=True, statistics=True, slab_size=2, quiet=True, modality="CT")
    status = {r["key"]: r["status"] for r in report["series"]}
    assert {k for k, s in status.items() if s == "resumed"} == set(done_before)
    assert sum(s == "done" for s in status.values()) == 5 - len(done_before)
    for key, mtime in done_before.items():  # finished series were not redone
        assert (out / key / "done.json").stat().st_mtime_ns == mtime
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    for p, lab in inputs:
        folder = out / series_key(path=p)
        record = json.loads((folder / "done.json").read_text())
        assert all((folder / f).is_file() for f in record["files"])
        np.testing.assert_array_equal(np.asarray(nib.load(str(folder / "mask.nii.gz")).dataobj), lab)


def test_cli_usage_errors_and_lazy_api(tmp_path, capsys, monkeypatch):
    predict_module = importlib.import_module("m2f_med.inference.predict")  # the package attribute is the function

    monkeypatch.setattr(predict_module, "DEFAULT_BUNDLE", None)
    code = main(["predict", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o")])
    assert code == 2 and "--bundle" in capsys.readouterr().err
    # a default bundle without weights: a usage error that names the missing checkpoint
    monkeypatch.syspath_prepend(str(stub_module_dir(tmp_path)))
    monkeypatch.setattr(predict_module, "DEFAULT_BUNDLE", make_test_bundle(tmp_path / "default", ckpt="none"))
    code = main(["predict", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "model.pt: checkpoint not found" in err and "--bundle" in err
    code = main(["predict", str(tmp_path), "-o", str(tmp_path / "o"), "--bundle", str(tmp_path),
                 "--formats", "png"])
    assert code == 2
    assert callable(m2f_med.predict)
    light = subprocess.run([sys.executable, "-c", "import m2f_med, sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert light.stdout.strip() == "False"


def test_batch_loads_the_next_series_while_segmenting_the_current_one(data_dir, stub_bundle, tmp_path, monkeypatch):
    import threading

    predict_mod = importlib.import_module("m2f_med.inference.predict")  # the package attribute is the function

    src = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    inputs = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        inputs.append(shutil.copy(src, tmp_path / name / "ct.nii.gz"))
    seen: list[tuple[str, str]] = []
    real_load = predict_mod._load

    def recording_load(job):
        seen.append((job.source, threading.current_thread().name))
        return real_load(job)

    monkeypatch.setattr(predict_mod, "_load", recording_load)
    ahead = predict(inputs, tmp_path / "ahead", bundle=stub_bundle, quiet=True)
    assert [r["loaded_ahead"] for r in ahead["series"]] == [False, True, True]
    threads = [name for _, name in seen]
    assert not threads[0].startswith("m2f-prefetch") and all(t.startswith("m2f-prefetch") for t in threads[1:])
    plain = predict(inputs, tmp_path / "plain", bundle=stub_bundle, quiet=True, prefetch=False)
    assert [r["loaded_ahead"] for r in plain["series"]] == [False, False, False]
    for a, b in zip(ahead["series"], plain["series"]):
        ma = nib.load(tmp_path / "ahead" / a["key"] / "mask.nii.gz")
        mb = nib.load(tmp_path / "plain" / b["key"] / "mask.nii.gz")
        np.testing.assert_array_equal(np.asarray(ma.dataobj), np.asarray(mb.dataobj))
