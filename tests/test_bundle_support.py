"""Unit tests of the bundle support code in ``m2f_med.bundle`` (no network training here)."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import HausdorffDistanceMetric

from m2f_med.bundle import (
    AtomicCheckpointSaver,
    AtomicNibabelWriter,
    ClassMetricsSaver,
    CSVStatsHandler,
    HausdorffDistanceMM,
    PhysicalHausdorffDistanceMetric,
    RemapLabelsByNamed,
    latest_checkpoint,
    load_datalist,
    make_lr_scheduler,
    mapping_by_name,
    resume_checkpoint,
)
from m2f_med.io.errors import VolumeError


# ---------------------------------------------------------------- datalist
def _write_datalist(tmp_path, content):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def test_load_datalist_resolves_paths_and_label_names(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for name in ("a/img.nii.gz", "a/seg.nii.gz", "a/manual.nii.gz"):
        (data / name).write_bytes(b"x")
    (data / "dicom_series").mkdir()
    path = _write_datalist(
        tmp_path,
        {
            "labels": {"5": "liver", "1": "spleen"},
            "training": [
                {"image": "a/img.nii.gz", "label": "a/seg.nii.gz"},
                {"image": "dicom_series", "label": "a/manual.nii.gz", "label_names": {"1": "liver"}},
            ],
            "test": [{"image": "dicom_series"}],
        },
    )
    cases = load_datalist(path, "training", data)
    assert cases[0]["image"] == str(data / "a" / "img.nii.gz")
    assert cases[0]["label_names"] == {"5": "liver", "1": "spleen"}
    assert cases[1]["image"] == str(data / "dicom_series")
    assert cases[1]["label_names"] == {"1": "liver"}
    assert load_datalist(path, "test", data) == [{"image": str(data / "dicom_series")}]
    assert load_datalist(path, "validation", data) == []
    # the file on disk is untouched
    assert "label_names" not in json.loads(path.read_text())["training"][0]


def test_load_datalist_names_a_missing_file(tmp_path):
    path = _write_datalist(tmp_path, {"training": [{"image": "nowhere/ct.nii.gz", "label": "x.nii.gz"}]})
    with pytest.raises(VolumeError, match=r"ct\.nii\.gz.*dataset_dir"):
        load_datalist(path, "training", tmp_path)
    assert load_datalist(path, "training", tmp_path, check_files=False)[0]["image"].endswith(
        "nowhere/ct.nii.gz"
    )


def test_load_datalist_rejects_bad_files(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        load_datalist(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VolumeError, match="not valid JSON"):
        load_datalist(bad)
    with pytest.raises(VolumeError, match="no 'training' section"):
        load_datalist(_write_datalist(tmp_path, {"validation": []}), "training")


# ---------------------------------------------------------------- label remapping by name
def test_mapping_by_name_keeps_shared_names_only():
    source = {"1": "spleen", "5": "liver", "52": "aorta", "99": "rib_left_8"}
    model = {"1": "liver", "2": "spleen", "3": "kidney_left"}
    assert mapping_by_name(source, model) == {5: 1, 1: 2}


def test_remap_labels_by_name_per_case():
    model = {"1": "liver", "2": "spleen"}
    label = MetaTensor(
        torch.tensor([[[[0, 1, 5, 52]]]], dtype=torch.uint8), meta={"filename_or_obj": "seg.nii.gz"}
    )
    ts = {"label": label, "label_names": {"1": "spleen", "5": "liver", "52": "aorta"}}
    out = RemapLabelsByNamed("label", model)(ts)
    assert out["label"].tolist() == [[[[0, 2, 1, 0]]]]
    assert "label_names" not in out and "label_names" in ts  # input dict untouched
    assert label.tolist() == [[[[0, 1, 5, 52]]]]
    manual = RemapLabelsByNamed("label", model)({"label": label.clone(), "label_names": {"1": "liver"}})
    assert manual["label"].tolist() == [[[[0, 1, 0, 0]]]]


def test_remap_labels_by_name_errors_name_the_file():
    label = MetaTensor(torch.zeros(1, 2, 2, 1), meta={"filename_or_obj": "/data/seg.nii.gz"})
    remap = RemapLabelsByNamed("label", {"1": "liver"})
    with pytest.raises(VolumeError, match=r"seg\.nii\.gz.*none of the model's classes"):
        remap({"label": label, "label_names": {"1": "lung"}})
    with pytest.raises(VolumeError, match="no label names"):
        remap({"label": label})
    defaulted = RemapLabelsByNamed("label", {"1": "liver"}, default_names={"3": "liver"})
    assert defaulted({"label": torch.tensor([[[[3, 1]]]])})["label"].tolist() == [[[[1, 0]]]]


# ---------------------------------------------------------------- checkpoints
def test_resume_checkpoint_choices(tmp_path):
    assert resume_checkpoint(tmp_path, False) is None
    assert resume_checkpoint(tmp_path, "false") is None
    with pytest.raises(FileNotFoundError, match="no 'checkpoint_epoch=N.pt'"):
        resume_checkpoint(tmp_path, True)
    for epoch in (2, 9, 10):
        (tmp_path / f"checkpoint_epoch={epoch}.pt").write_bytes(b"x")
    # numeric, not lexicographic: epoch 10 is the latest
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=10.pt"
    assert resume_checkpoint(tmp_path, "true").endswith("checkpoint_epoch=10.pt")
    explicit = tmp_path / "checkpoint_epoch=2.pt"
    assert resume_checkpoint(tmp_path, str(explicit)) == str(explicit)
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        resume_checkpoint(tmp_path, str(tmp_path / "other.pt"))


def _engine_with_metric(value: float):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"val_mean_dice": value}
    engine.state.key_metric_name = "val_mean_dice"
    engine.state.epoch = 1
    engine.state.iteration = 1
    return engine


def test_atomic_checkpoint_saver_writes_plain_state_dict_and_keeps_best_across_resume(tmp_path):
    net = torch.nn.Linear(3, 2)
    saver = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    assert saver._key_metric_checkpoint.save_handler._atomic is True
    engine = _engine_with_metric(0.8)
    saver.metrics_completed(engine)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], net.weight.detach())
    assert not [p for p in tmp_path.iterdir() if p.name != "model.pt"]  # no temporary file left

    # a new run restores the tracking list: a worse score no longer overwrites the best model
    tracking = saver.state_dict()
    with torch.no_grad():
        net.weight.add_(1.0)
    resumed = AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    resumed.load_state_dict(tracking)
    resumed.metrics_completed(_engine_with_metric(0.5))
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], state["weight"])
    resumed.metrics_completed(_engine_with_metric(0.9))
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net.weight.detach())
    plain = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1)
    assert plain.state_dict() == {}


# ---------------------------------------------------------------- learning-rate schedules
def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_poly_schedule_follows_formula():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    got = _lrs(make_lr_scheduler(opt, "poly", total_steps=10, power=0.9), 10)
    want = [1e-3 * (1 - t / 10) ** 0.9 for t in range(10)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cosine_and_warmup_schedules():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    got = _lrs(make_lr_scheduler(opt, "cosine", total_steps=10, warmup_steps=2), 10)
    assert got[0] < 0.05 and got[1] < got[2] and got[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(got[2:], got[3:]))
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    poly = _lrs(make_lr_scheduler(opt2, "poly", total_steps=6, warmup_steps=2, power=1.0), 6)
    assert poly[0] == pytest.approx(0.01) and poly[2] == pytest.approx(1.0) and poly[3] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        make_lr_scheduler(opt, "step")
    with pytest.raises(ValueError, match="warmup_steps"):
        make_lr_scheduler(opt, "poly", total_steps=3, warmup_steps=3)


# ---------------------------------------------------------------- CSV training log
def _fake_trainer(losses_per_epoch, evaluator=None):
    from ignite.engine import Engine

    feed = iter([loss for epoch in losses_per_epoch for loss in epoch])

    def step(engine, batch):
        return {"loss": torch.tensor(next(feed))}

    engine = Engine(step)
    engine.optimizer = SimpleNamespace(param_groups=[{"lr": 0.01}])
    return engine


@pytest.mark.parametrize("schedule,warmup", [("poly", 0), ("poly", 1), ("cosine", 1)])
def test_resume_with_a_larger_max_epochs_extends_the_schedule(tmp_path, schedule, warmup):
    """2 epochs, then --resume --max_epochs 4: epochs 3 and 4 follow the 4-epoch schedule, not lr 0."""
    from ignite.engine import Engine, Events
    from monai.handlers import LrScheduleHandler

    from m2f_med.bundle import ResumeCheckpointLoader

    def run(max_epochs, resume=None):
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.AdamW(net.parameters(), lr=0.01)
        sched = make_lr_scheduler(opt, schedule, total_steps=max_epochs, warmup_steps=warmup)
        trainer = Engine(lambda e, b: None)
        LrScheduleHandler(sched, epoch_level=True, print_lr=False).attach(trainer)
        lrs = []
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
        trainer.state.max_epochs, trainer.state.epoch_length = max_epochs, 1  # as SupervisedTrainer sets them
        objs = {"model": net, "optimizer": opt, "lr_scheduler": sched, "trainer": trainer}
        if resume is not None:
            ResumeCheckpointLoader(load_path=str(resume), load_dict=objs)(trainer)
        trainer.run([0])
        torch.save({k: v.state_dict() for k, v in objs.items()}, tmp_path / f"ckpt{max_epochs}.pt")
        return lrs

    full = run(4)
    run(2)
    resumed = run(4, resume=tmp_path / "ckpt2.pt")
    assert resumed == pytest.approx(full[2:]) and min(resumed) > 0


def test_csv_log_rows_validation_columns_and_resume(tmp_path):
    log = tmp_path / "logs" / "training_log.csv"
    evaluator = SimpleNamespace(state=SimpleNamespace(epoch=0, metrics={}, metric_details={}))
    trainer = _fake_trainer([[1.0, 3.0], [0.5, 0.5]])

    from ignite.engine import Events

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):  # stands in for ValidationHandler, which runs before the CSV handler
        if engine.state.epoch == 2:
            evaluator.state.epoch = 2
            evaluator.state.metrics = {"val_mean_dice": 0.6, "per_class": torch.tensor([0.1, 0.2])}
            evaluator.state.metric_details = {
                "val_mean_dice": torch.tensor([[0.5, float("nan")], [0.7, 0.4]])
            }

    CSVStatsHandler(log, evaluator=evaluator, class_names=["liver", "spleen"]).attach(trainer)
    trainer.run([0, 1], max_epochs=2)
    rows = list(csv.DictReader(open(log)))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["train_loss"]) == pytest.approx(2.0) and float(
        rows[1]["train_loss"]
    ) == pytest.approx(0.5)
    assert rows[0]["val_mean_dice"] == "" and float(rows[1]["val_mean_dice"]) == pytest.approx(0.6)
    assert float(rows[1]["val_mean_dice_liver"]) == pytest.approx(0.6)  # NaN-aware mean over cases
    assert float(rows[1]["val_mean_dice_spleen"]) == pytest.approx(0.4)
    assert "per_class" not in rows[1]  # non-scalar metrics are left to the per-class columns
    assert float(rows[0]["lr"]) == pytest.approx(0.01)

    # a resumed run (from epoch 1) keeps epoch 1 and replaces what came after it
    resumed = _fake_trainer([[9.0, 9.0]])
    resumed.state.epoch, resumed.state.iteration = 1, 2
    resumed.state.max_epochs, resumed.state.epoch_length = 2, 2  # as CheckpointLoader restores them
    CSVStatsHandler(log).attach(resumed)
    resumed.run([0, 1], max_epochs=2)
    rows = list(csv.DictReader(open(log)))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["train_loss"]) == pytest.approx(9.0)
    assert float(rows[0]["train_loss"]) == pytest.approx(2.0)


# ---------------------------------------------------------------- metrics
def _cubes(shift_z: int, spacing=(1.0, 1.0, 5.0)):
    aff = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    pred = torch.zeros(1, 2, 12, 12, 12)
    gt = torch.zeros(1, 2, 12, 12, 12)
    gt[0, 1, 3:7, 3:7, 3:7] = 1
    pred[0, 1, 3:7, 3:7, 3 + shift_z : 7 + shift_z] = 1
    pred[0, 0] = 1 - pred[0, 1]
    gt[0, 0] = 1 - gt[0, 1]
    return MetaTensor(pred, affine=aff), MetaTensor(gt, affine=aff)


def test_hd95_uses_the_label_spacing_in_mm():
    pred, gt = _cubes(shift_z=2)
    ours = PhysicalHausdorffDistanceMetric(percentile=95)
    ours(pred, gt)
    reference = HausdorffDistanceMetric(percentile=95)
    reference(pred.as_tensor(), gt.as_tensor(), spacing=(1.0, 1.0, 5.0))
    voxels = HausdorffDistanceMetric(percentile=95)
    voxels(pred.as_tensor(), gt.as_tensor())
    assert ours.aggregate().item() == pytest.approx(reference.aggregate().item())
    assert ours.aggregate().item() == pytest.approx(10.0)  # 2 slices x 5 mm
    assert voxels.aggregate().item() == pytest.approx(2.0)  # what MONAI's handler would report


def test_hd95_handler_on_decollated_items():
    from ignite.engine import Engine

    pred, gt = _cubes(shift_z=1, spacing=(0.5, 0.5, 3.0))
    engine = Engine(lambda e, b: {"pred": [pred[0]], "label": [gt[0]]})
    HausdorffDistanceMM(output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "hd95")
    engine.run([0], max_epochs=1)
    assert engine.state.metrics["hd95"] == pytest.approx(3.0)
    assert engine.state.metric_details["hd95"].shape == (1, 1)


def test_hd95_empty_prediction_or_reference_is_nan_and_counted_never_zero(tmp_path):
    from ignite.engine import Engine

    pred, gt = _cubes(shift_z=1, spacing=(0.5, 0.5, 3.0))
    empty = pred.clone()
    empty[:, 1] = 0
    empty[:, 0] = 1
    # case 1: empty prediction, case 2: empty reference -> both undefined, nothing defined at all
    batches = [([empty[0]], [gt[0]]), ([pred[0]], [empty[0]])]
    engine = Engine(lambda e, b: {"pred": b[0], "label": b[1]})
    HausdorffDistanceMM(output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "val_hd95")
    ClassMetricsSaver(save_dir=str(tmp_path), metrics="*").attach(engine)
    engine.run(batches, max_epochs=1)
    assert math.isnan(engine.state.metrics["val_hd95"])
    assert engine.state.metrics["val_hd95_undefined"] == 2
    assert torch.isnan(engine.state.metric_details["val_hd95"]).all()  # per-case values too, not zeroed
    rows = dict(line.split(",", 1) for line in (tmp_path / "metrics.csv").read_text().splitlines())
    assert math.isnan(float(rows["val_hd95"])) and rows["val_hd95_undefined"] == "2"
    # one defined case among undefined ones: the mean is over the defined case only
    engine2 = Engine(lambda e, b: {"pred": b[0], "label": b[1]})
    HausdorffDistanceMM(output_transform=lambda o: (o["pred"], o["label"])).attach(engine2, "hd95")
    engine2.run(batches + [([pred[0]], [gt[0]])], max_epochs=1)
    assert engine2.state.metrics["hd95"] == pytest.approx(3.0)
    assert engine2.state.metrics["hd95_undefined"] == 2


def test_class_metrics_saver_names_columns(tmp_path):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"val_mean_dice": 0.5}
    engine.state.metric_details = {"val_mean_dice": torch.tensor([[0.25, float("nan")], [0.75, 0.5]])}
    saver = ClassMetricsSaver(save_dir=str(tmp_path), class_labels=["liver", "spleen"], metric_details="*")
    saver._filenames = ["/data/a.nii.gz", "/data/b_dicom"]
    saver(engine)
    rows = list(csv.reader(open(tmp_path / "val_mean_dice_raw.csv")))
    assert rows[0] == ["filename", "liver", "spleen", "mean"]
    assert rows[1][0] == "/data/a.nii.gz" and float(rows[1][1]) == pytest.approx(0.25)
    assert math.isnan(float(rows[1][2])) and float(rows[2][3]) == pytest.approx(0.625)
    assert (tmp_path / "metrics.csv").read_text().startswith("val_mean_dice,0.5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "val_mean_dice_raw.csv"]


# ---------------------------------------------------------------- writer
def test_atomic_nibabel_writer(tmp_path):
    import nibabel as nib

    writer = AtomicNibabelWriter(output_dtype=np.uint8)
    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    writer.set_data_array(torch.arange(24).reshape(1, 2, 3, 4) % 3, channel_dim=0)
    writer.set_metadata({"affine": aff, "original_affine": aff}, resample=False)
    target = tmp_path / "out" / "case_seg.nii.gz"
    target.parent.mkdir()
    writer.write(str(target))
    img = nib.load(target)
    np.testing.assert_allclose(img.affine, aff)
    assert img.get_fdata().shape == (2, 3, 4) and img.get_data_dtype() == np.uint8
    assert [p.name for p in target.parent.iterdir()] == ["case_seg.nii.gz"]


# ---------------------------------------------------------------- label loading (real files)
def test_load_labeld_reads_seg_and_rtstruct_onto_the_image(data_dir):
    from monai.transforms import LoadImaged

    from m2f_med.bundle import LoadLabeld
    from m2f_med.transforms import M2FMedReader

    load_image = LoadImaged("image", reader=M2FMedReader(), image_only=True)
    seg_case = load_image(
        {
            "image": str(data_dir / "dcmqi" / "ct-3slice"),
            "label": str(data_dir / "dcmqi" / "seg_dicom" / "liver.dcm"),
        }
    )
    out = LoadLabeld("label")(seg_case)
    assert tuple(out["label"].shape) == tuple(seg_case["image"].shape) == (1, 512, 512, 3)
    np.testing.assert_allclose(
        np.asarray(out["label"].affine), np.asarray(seg_case["image"].affine), atol=1e-4
    )
    assert out["label_names"] == {"1": "liver"}  # from the SEG's SegmentLabel, in snake_case
    liver_hu = seg_case["image"][out["label"] == 1].mean().item()
    assert 0 < liver_hu < 120  # soft tissue, so the mask lies on the liver and not beside it

    sts = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001" / "CT"
    rt_case = load_image(
        {
            "image": str(sts / "dicom" / "image"),
            "label": str(sts / "dicom" / "mask" / "RS.dcm"),
            "label_names": {"1": "tumour"},
        }
    )
    rt = LoadLabeld("label")(rt_case)
    assert tuple(rt["label"].shape) == tuple(rt_case["image"].shape)
    assert rt["label_names"] == {"1": "tumour"}  # the datalist's names win over the file's
    reference = nib.load(sts / "nifti" / "mask" / "mask.nii.gz")
    # the RTSTRUCT drawn on the series has about the volume of the reference mask (mL, same patient)
    ml = float((rt["label"] > 0).sum()) * float(np.prod(rt["label"].pixdim.numpy())) / 1000
    ref_ml = (
        float((np.asarray(reference.dataobj) > 0).sum()) * np.prod(reference.header.get_zooms()[:3]) / 1000
    )
    assert ml == pytest.approx(ref_ml, rel=0.1)


def test_load_label_needs_a_reference_for_rtstruct(data_dir):
    from m2f_med.bundle import load_label, snake_case

    rs = data_dir / "tcia" / "soft_tissue_sarcoma" / "STS_001" / "CT" / "dicom" / "mask" / "RS.dcm"
    with pytest.raises(VolumeError, match="RTSTRUCT label needs"):
        load_label(rs, None)
    label, names = load_label(data_dir / "totalsegmentator" / "example_seg.nii.gz", None)
    assert names == {} and label.shape[0] == 1 and not label.is_floating_point()
    assert snake_case(" Kidney Left ") == "kidney_left" and snake_case("GTV-Mass") == "gtv_mass"
