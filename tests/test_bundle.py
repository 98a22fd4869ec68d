"""The MONAI bundle ``bundles/m2f_ct_organs`` end to end on real CT: train, resume, evaluate, infer, DDP, export.

Every config runs through ``monai.bundle`` (``ConfigWorkflow`` in-process, the CLI for inference and
``torchrun`` for the 2-process gloo run) for one short epoch on a few slices of the TotalSegmentator example
CT, with overrides that make each run take seconds: 6 mm in-plane spacing, 64² windows, 2 iterations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from m2f_med.data import repo_root

BUNDLE = repo_root() / "bundles" / "m2f_ct_organs"
CONFIGS = BUNDLE / "configs"
SCHEMA = repo_root().parent / "shared" / "monai" / "meta_schema_20240725.json"

# small and fast, but the same pipeline: real CT in, real labels, whole-volume validation
FAST = {
    "pixdim": [6.0, 6.0, -1.0],
    "roi_size": [64, 64],
    "sw_batch_size": 16,
}
FAST_TRAIN = {
    **FAST,
    "max_epochs": 1,
    "iterations_per_epoch": 2,
    "val_interval": 1,
    "num_workers": 0,
    "train#patch_size": [64, 64],
    "train#num_samples": 2,
}


def _cfg(name: str) -> str:
    return str(CONFIGS / name)


@pytest.fixture(scope="module")
def small_datalist(data_dir, tmp_path_factory):
    """Training: the first 30 slices of the TotalSegmentator example CT (TotalSegmentator ids, every class)
    and the manual MSD spleen crop (spleen only: partial labels, named per case); validation: the 3-slice CT
    with a DICOM-SEG liver; test: the held-out DICOM series."""
    real = json.loads((CONFIGS / "datalist.json").read_text())
    msd = next(c for c in real["training"] if "spleen" in c["image"])
    content = {
        "labels": real["labels"],
        "training": [
            {"image": "totalsegmentator/example_ct_sm.nii.gz", "label": "totalsegmentator/example_seg.nii.gz"},
            msd,
        ],
        "validation": real["validation"],
        "test": real["test"],
    }
    path = tmp_path_factory.mktemp("datalist") / "small.json"
    path.write_text(json.dumps(content))
    return path


def _workflow(configs, workflow_type, **override):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[_cfg(c) for c in configs],
        workflow_type=workflow_type,
        bundle_root=str(BUNDLE),
        **override,
    )


def _run(workflow):
    workflow.initialize()
    try:
        workflow.run()
    finally:
        workflow.finalize()


@pytest.fixture(scope="module")
def trained(data_dir, small_datalist, tmp_path_factory):
    """One short training epoch; returns the run folder (models/, logs/)."""
    out = tmp_path_factory.mktemp("train")
    wf = _workflow(
        ["train.yaml"],
        "train",
        dataset_dir=str(data_dir),
        datalist=str(small_datalist),
        ckpt_dir=str(out / "models"),
        log_dir=str(out / "logs"),
        output_dir=str(out / "eval"),
        **FAST_TRAIN,
    )
    wf.initialize()
    assert wf.check_properties() == []  # the keys MONAI's tools look for (train#trainer, max_epochs, ...)
    wf.run()
    wf.finalize()
    return out


def test_partial_label_cases_reach_the_loss_with_their_labelled_classes(data_dir, small_datalist):
    """The spleen-only case is loaded with ``labelled`` = spleen only and the loss gets that mask."""
    wf = _workflow(["train.yaml"], "train", dataset_dir=str(data_dir), datalist=str(small_datalist), **FAST_TRAIN)
    wf.initialize()
    dataset = wf.parser.get_parsed_content("train#dataset")
    names = wf.parser.get_parsed_content("class_names")
    flags = {str(dataset.data[i]["image"]).split("/")[-1]: dataset[i][0]["labelled"] for i in range(len(dataset))}
    spleen = flags["sub-spleen2_ct.nii.gz"]
    assert [n for n, f in zip(names, spleen.tolist()) if f] == ["spleen"]
    assert bool((flags["example_ct_sm.nii.gz"] > 0).all())
    trainer = wf.parser.get_parsed_content("train#trainer")
    image, target = trainer.prepare_batch({"image": dataset[1][0]["image"][None],
                                           "label": dataset[1][0]["label"][None],
                                           "labelled": spleen[None]}, "cpu")
    assert target["labelled"].shape == (1, len(names))
    wf.finalize()


def test_train_writes_best_model_checkpoint_and_logs(trained):
    best = torch.load(trained / "models" / "model.pt", weights_only=True)
    from m2f_med.networks import Mask2FormerNet

    net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=9)
    net.load_state_dict(best, strict=True)  # a plain state dict of the network
    ckpt = torch.load(trained / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model_saver"}
    assert ckpt["trainer"]["iteration"] == 2 and ckpt["trainer"]["max_epochs"] == 1
    rows = (trained / "logs" / "training_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:5] == ["epoch", "iterations", "train_loss", "lr", "epoch_seconds"]
    assert "val_mean_dice" in header and "val_mean_dice_spleen" in header
    values = dict(zip(header, rows[1].split(",")))
    assert (
        values["epoch"] == "1"
        and np.isfinite(float(values["train_loss"]))
        and float(values["train_loss"]) > 0
    )
    # the validation case names only the liver (DICOM-SEG): other classes are not scored
    assert 0.0 <= float(values["val_mean_dice_liver"]) <= 1.0
    assert values["val_mean_dice_kidney_left"] == "nan" and values["val_mean_dice_spleen"] == "nan"
    assert list((trained / "logs").glob("events.out.tfevents.*"))


def test_resume_continues_from_the_checkpoint(trained, data_dir, small_datalist, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = torch.load(run / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    wf = _workflow(
        ["train.yaml"],
        "train",
        dataset_dir=str(data_dir),
        datalist=str(small_datalist),
        ckpt_dir=str(run / "models"),
        log_dir=str(run / "logs"),
        output_dir=str(run / "eval"),
        **{**FAST_TRAIN, "max_epochs": 2, "resume": True},
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2  # restored before running
    optimizer = wf.parser.get_parsed_content("optimizer")
    assert int(optimizer.state_dict()["state"][0]["step"]) == int(before["optimizer"]["state"][0]["step"])
    wf.run()
    wf.finalize()
    after = torch.load(run / "models" / "checkpoint_epoch=2.pt", weights_only=True)
    assert after["trainer"]["iteration"] == 4
    assert int(after["optimizer"]["state"][0]["step"]) == int(before["optimizer"]["state"][0]["step"]) + 2
    rows = (run / "logs" / "training_log.csv").read_text().splitlines()
    epochs = [line.split(",")[0] for line in rows[1:]]
    assert epochs == ["1", "2"]
    # the checkpoint's 1-epoch poly schedule ended at lr 0; the resumed run follows its own 2-epoch one
    lr = float(dict(zip(rows[0].split(","), rows[2].split(",")))["lr"])
    assert lr == pytest.approx(wf.parser.get_parsed_content("learning_rate") * 0.5 ** 0.9, rel=1e-6)


def test_evaluate_on_the_original_grid(trained, data_dir, small_datalist, tmp_path):
    """Dice and HD95 per case and class on the held-out DICOM series, predictions inverted to its grid."""
    out = tmp_path / "eval"
    wf = _workflow(
        ["train.yaml", "evaluate.yaml"],
        None,
        dataset_dir=str(data_dir),
        datalist=str(small_datalist),
        ckpt_dir=str(trained / "models"),
        log_dir=str(tmp_path / "logs"),
        output_dir=str(out),
        save_predictions=True,
        **FAST,
    )
    _run(wf)
    header, row = (out / "val_mean_dice_raw.csv").read_text().splitlines()[:2]
    names = [
        "liver",
        "spleen",
        "kidney_right",
        "kidney_left",
        "stomach",
        "aorta",
        "pancreas",
        "gallbladder",
        "inferior_vena_cava",
    ]
    assert header.split(",") == ["filename", *names, "mean"]
    assert row.split(",")[0].endswith("example_ct_dicom")
    dice = dict(zip(header.split(","), row.split(",")))
    assert 0.0 <= float(dice["liver"]) <= 1.0 and dice["kidney_left"] == "nan"  # no kidney in that scan
    assert (out / "val_hd95_raw.csv").read_text().splitlines()[0].split(",")[1:-1] == names
    assert "val_mean_dice" in (out / "metrics.csv").read_text()
    # the saved prediction lies on the DICOM series' own grid (512 x 512 x 20), not the 6 mm model grid
    from m2f_med.io import load_volume

    src = load_volume(str(data_dir / "totalsegmentator" / "example_ct_dicom"))
    pred = nib.load(next(out.glob("*_seg.nii.gz")))
    assert pred.shape == tuple(src.shape[1:]) == (512, 512, 20)
    np.testing.assert_allclose(pred.affine, np.asarray(src.affine), atol=1e-3)


def _run_inference_cli(trained, images, out):
    """The researcher's command: ``python -m monai.bundle run --config_file configs/inference.yaml ...``."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", _cfg("inference.yaml"),
        "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(trained / "models" / "model.pt"),
        "--output_dir", str(out),
        "--data", json.dumps([{"image": str(i)} for i in images]),
        "--pixdim", json.dumps(FAST["pixdim"]),
        "--roi_size", json.dumps(FAST["roi_size"]),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_inference_cli_writes_masks_on_the_input_grid(trained, data_dir, tmp_path):
    image = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    out = tmp_path / "pred"
    _run_inference_cli(trained, [image], out)
    src = nib.load(image)
    seg = nib.load(out / "example_ct_sm_seg.nii.gz")
    assert seg.shape == src.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= set(range(10))


def test_inference_cli_keeps_cases_with_the_same_name_apart(trained, data_dir, tmp_path):
    """Two inputs named alike in different folders (``a/ct.nii.gz``, ``b/ct.nii.gz``, a common dataset layout)
    give two masks, each under its folder, instead of one overwriting the other."""
    src = data_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    cases = tmp_path / "cases"
    for name in ("a", "b"):
        (cases / name).mkdir(parents=True)
        shutil.copyfile(src, cases / name / "ct.nii.gz")
    out = tmp_path / "pred"
    _run_inference_cli(trained, [cases / n / "ct.nii.gz" for n in ("a", "b")], out)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == ["a/ct_seg.nii.gz", "b/ct_seg.nii.gz"]
    for name in ("a", "b"):
        seg = nib.load(out / name / "ct_seg.nii.gz")
        np.testing.assert_allclose(seg.affine, nib.load(src).affine, atol=1e-4)


def test_inference_config_has_the_properties_monai_tools_need(data_dir):
    wf = _workflow(["inference.yaml"], "infer", dataset_dir=str(data_dir))
    wf.initialize()
    assert wf.check_properties() == []
    pre = wf.parser.get_parsed_content("preprocessing").transforms
    post = wf.parser.get_parsed_content("postprocessing").transforms
    assert type(pre[0]).__name__ == "LoadImaged" and type(post[-1]).__name__ == "SaveImaged"


def test_train_and_inference_configs_agree():
    train = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    infer = yaml.safe_load((CONFIGS / "inference.yaml").read_text())
    for key in (
        "labels",
        "num_context_slices",
        "in_channels",
        "pixdim",
        "intensity",
        "roi_size",
        "sw_batch_size",
        "overlap",
        "slice_network_def",
        "inferer",
    ):
        assert train[key] == infer[key], key
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channels == {"0": "background", **train["labels"]}
    # network_def takes the CT volume (1 channel, 3-D); the 2k+1 slice stack is built inside
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 3


def test_real_datalist_keeps_the_held_out_scan_out_of_training(data_dir):
    from m2f_med.bundle import load_datalist

    sections = {
        s: load_datalist(CONFIGS / "datalist.json", s, data_dir) for s in ("training", "validation", "test")
    }
    held_out = {c["image"] for c in sections["test"]}
    assert any(p.endswith("example_ct_dicom") for p in held_out)
    used = {c[k] for s in ("training", "validation") for c in sections[s] for k in ("image", "label")}
    assert not held_out & used and all(c["label_names"] for s in sections.values() for c in s)


def test_metadata_and_network_io_verify():
    from monai.bundle import verify_metadata, verify_net_in_out

    if not SCHEMA.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"MONAI metadata schema missing: {SCHEMA}")
        pytest.skip(f"MONAI metadata schema missing: {SCHEMA}")
    verify_metadata(meta_file=_cfg("metadata.json"), filepath=str(SCHEMA))  # offline: the file exists
    verify_net_in_out(
        net_id="network_def",
        meta_file=_cfg("metadata.json"),
        config_file=_cfg("inference.yaml"),
        device="cpu",
        n=2,
    )


def test_export_command_writes_a_torch_export_program(trained, tmp_path, data_dir):
    target = tmp_path / "model.pt2"
    wf = _workflow(
        ["inference.yaml"],
        None,
        run_id="export",
        dataset_dir=str(data_dir),
        ckpt_path=str(trained / "models" / "model.pt"),
        export_filepath=str(target),
        export_image_size=[64, 64],
    )
    _run(wf)
    program = torch.export.load(str(target)).module()
    x = torch.rand(1, 3, 64, 64)
    probs = program(x)
    assert probs.shape == (1, 10, 64, 64)
    from m2f_med.networks import Mask2FormerNet, SemanticProbabilities

    net = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=9)
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    torch.testing.assert_close(probs, SemanticProbabilities(net.eval())(x), atol=1e-4, rtol=1e-4)


def test_load_bundle_reads_the_inference_config(trained, tmp_path):
    """``m2f-med predict --bundle`` / napari read the same ``inference.yaml`` (docs/bundle_contract.md)."""
    from m2f_med.inference import load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(CONFIGS, bundle / "configs")
    (bundle / "models").mkdir()
    shutil.copy(trained / "models" / "model.pt", bundle / "models" / "model.pt")
    model = load_bundle(bundle, "cpu")
    assert model.labels[1] == "liver" and model.num_classes == 9 and model.num_context_slices == 1
    assert list(model.pixdim) == [1.5, 1.5, -1.0] and model.intensity["a_min"] == -160


@pytest.mark.slow
def test_multi_gpu_train_runs_two_gloo_processes(data_dir, small_datalist, tmp_path):
    """``torchrun --nproc_per_node=2`` with ``multi_gpu_train.yaml``: DDP on CPU with the gloo backend."""
    out = tmp_path / "ddp"
    overrides = {
        **FAST_TRAIN,
        "dataset_dir": str(data_dir),
        "datalist": str(small_datalist),
        "ckpt_dir": str(out / "models"),
        "log_dir": str(out / "logs"),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps([_cfg("train.yaml"), _cfg("multi_gpu_train.yaml")]),
        "--bundle_root",
        str(BUNDLE),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=400)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    ckpt = torch.load(out / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # saved unwrapped, by rank 0
    assert ckpt["trainer"]["iteration"] == 2
    assert (out / "models" / "model.pt").is_file()
    rows = (out / "logs" / "training_log.csv").read_text().splitlines()
    assert len(rows) == 2  # one header, one epoch: only rank 0 writes
    assert "val_mean_dice_liver" in rows[0]  # validation sharded over both processes, metrics gathered


@pytest.mark.slow
def test_multi_gpu_evaluate_runs_two_gloo_processes(trained, data_dir, small_datalist, tmp_path):
    """``multi_gpu_evaluate.yaml``: two cases split over two processes, one report (the two training cases of
    the small datalist: its validation section has one case, fewer than the processes)."""
    out = tmp_path / "eval"
    overrides = {
        **FAST,
        "dataset_dir": str(data_dir),
        "datalist": str(small_datalist),
        "ckpt_dir": str(trained / "models"),
        "output_dir": str(out),
        "evaluate_section": "training",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps([_cfg("train.yaml"), _cfg("evaluate.yaml"), _cfg("multi_gpu_evaluate.yaml")]),
        "--bundle_root",
        str(BUNDLE),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = (out / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(rows) == 3  # header + both cases, gathered from the two processes
    assert any("sub-spleen2_ct" in r for r in rows) and any("example_ct_sm" in r for r in rows)


def test_unet_baseline_and_2d_variant_use_the_same_pipeline(data_dir, small_datalist, tmp_path):
    """Issue 7's comparison: ``unet_baseline.yaml`` over train/evaluate, with k = 0 (plain 2D slices)."""
    paths = {
        "dataset_dir": str(data_dir),
        "datalist": str(small_datalist),
        "ckpt_dir": str(tmp_path / "models"),
        "log_dir": str(tmp_path / "logs"),
        "output_dir": str(tmp_path / "eval"),
        "num_context_slices": 0,
    }
    _run(_workflow(["train.yaml", "unet_baseline.yaml"], "train", **paths, **FAST_TRAIN))
    from monai.networks.nets import UNet

    net = UNet(2, 1, 10, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    net.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    _run(
        _workflow(
            ["train.yaml", "evaluate.yaml", "unet_baseline.yaml"],
            None,
            evaluate_section="validation",
            **paths,
            **FAST,
        )
    )
    header = (tmp_path / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()[0]
    assert header.startswith("filename,liver,spleen")


def test_loss_samples_the_presets_points_and_the_shipped_recipe_keeps_its_own():
    from monai.bundle import ConfigParser

    from m2f_med.networks import PRESETS

    def loss_points(*files):
        parser = ConfigParser()
        parser.read_config([_cfg(f) for f in files])
        return parser.get_parsed_content("loss").criterion.num_points

    assert loss_points("train.yaml") == PRESETS["tiny"].train_num_points == 1024
    assert loss_points("train.yaml", "train_default_model.yaml") == 12544  # how the 0.2.0 weights were trained


def test_training_never_writes_into_the_shipped_models_folder():
    from monai.bundle import ConfigParser

    def resolved(key, *files):
        parser = ConfigParser()
        parser.read_config([_cfg(f) for f in files])
        parser["bundle_root"] = str(BUNDLE)
        return os.path.normpath(parser.get_parsed_content(key))

    shipped = os.path.normpath(BUNDLE / "models")
    for files in (("train.yaml",), ("train.yaml", "train_default_model.yaml"), ("train.yaml", "multi_gpu_train.yaml")):
        assert resolved("ckpt_dir", *files) != shipped and resolved("log_dir", *files).startswith(str(BUNDLE / "runs"))
    assert resolved("ckpt_dir", "train.yaml", "evaluate.yaml") == shipped  # evaluation defaults to the shipped model


def test_readme_torchrun_evaluate_lines_have_a_case_per_process():
    """Each ``torchrun ... evaluate.yaml`` line of the bundle README, run verbatim on ``configs/datalist.json``,
    needs at least ``nproc_per_node`` cases in the section it evaluates (MONAI's DistributedSampler refuses
    fewer): the default ``test`` section holds a single case."""
    import re

    readme = (BUNDLE / "docs" / "README.md").read_text().replace("\\\n", " ")  # join continued lines
    datalist = json.loads((CONFIGS / "datalist.json").read_text())
    default = yaml.safe_load((CONFIGS / "evaluate.yaml").read_text())["evaluate_section"]
    commands = re.findall(r"^torchrun [^\n]*", readme, flags=re.M)
    evaluate = [c for c in commands if "evaluate.yaml" in c and "--dataset_dir" not in c]
    assert evaluate, "no torchrun evaluation example in the README"
    for command in evaluate:
        nproc = int(re.search(r"--nproc_per_node=(\d+)", command).group(1))
        section = re.search(r"--evaluate_section (\w+)", command)
        section = section.group(1) if section else default
        assert len(datalist[section]) >= nproc, (command, section, len(datalist[section]))


def test_pretrained_option_loads_a_save_pretrained_folder(data_dir, small_datalist, tmp_path):
    """``--pretrained PATH``: the network starts from a local HF ``save_pretrained`` folder."""
    from m2f_med.networks import Mask2FormerNet

    torch.manual_seed(5)
    source = Mask2FormerNet(preset="tiny", in_channels=3, num_classes=9)
    source.hf_model.save_pretrained(tmp_path / "hf")
    wf = _workflow(["train.yaml"], "train", dataset_dir=str(data_dir), datalist=str(small_datalist),
                   pretrained=str(tmp_path / "hf"), **FAST_TRAIN)
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    theirs, ours = source.hf_model.state_dict(), net.hf_model.state_dict()
    decoder = [k for k in theirs if "transformer_module" in k and theirs[k].ndim == 2]
    assert decoder and all(torch.equal(theirs[k], ours[k]) for k in decoder)
    wf.finalize()
    fresh = _workflow(["train.yaml"], "train", dataset_dir=str(data_dir), datalist=str(small_datalist), **FAST_TRAIN)
    fresh.initialize()
    other = fresh.parser.get_parsed_content("network").hf_model.state_dict()
    assert not all(torch.equal(theirs[k], other[k]) for k in decoder)  # without it: a fresh network
    fresh.finalize()


def test_multi_modal_ct_and_pet_case_trains_one_iteration(data_dir, tmp_path):
    """A datalist ``image`` listing two co-registered volumes (sarcoma CT 0.98 mm + PET 4.7 mm, resampled onto
    the CT grid), each with its own intensity spec: 2 modalities x 3 slices = 6 input channels."""
    sts = "tcia/soft_tissue_sarcoma/STS_001"
    datalist = tmp_path / "ct_pet.json"
    datalist.write_text(json.dumps({
        "labels": {"1": "gtv_mass"},
        "training": [{"image": [f"{sts}/CT/nifti/image/image.nii.gz", f"{sts}/PET/nifti/image/image.nii.gz"],
                      "label": f"{sts}/CT/nifti/mask/mask.nii.gz"}],
    }))
    wf = _workflow(
        ["train.yaml"], "train", dataset_dir=str(data_dir), datalist=str(datalist), labels={"1": "gtv_mass"},
        intensity=[{"a_min": -160, "a_max": 240, "b_min": 0.0, "b_max": 1.0, "clip": True},
                   {"mode": "percentile", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True}],
        ckpt_dir=str(tmp_path / "models"), log_dir=str(tmp_path / "logs"), output_dir=str(tmp_path / "eval"),
        **{**FAST_TRAIN, "iterations_per_epoch": 1, "pixdim": [4.0, 4.0, -1.0]},
    )
    wf.initialize()
    assert wf.parser.get_parsed_content("in_channels") == 6
    sample = wf.parser.get_parsed_content("train#dataset")[0][0]
    assert sample["image"].shape[0] == 6  # (CT, PET) x (z-1, z, z+1), after augmentation
    wf.run()
    wf.finalize()
    ckpt = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 1
