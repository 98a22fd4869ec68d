"""Batch inference over NIfTI files, DICOM series folders and folder trees of many studies (``predict``).

Per series, in ``OUTDIR/<key>/`` (``key`` is a hash of the SeriesInstanceUID, or the cleaned file stem plus a
hash of its path; never raw DICOM tag text):

* ``mask.nii.gz`` (``nifti``) and/or ``mask.seg.dcm`` (``dicom-seg``, DICOM inputs only; it references the
  source series' instances), ``labels.json`` (``{"1": "liver", ...}``);
* with ``statistics``: ``statistics.json`` and ``statistics.csv`` (volume in mL, mean / std intensity, HU for
  CT, mean confidence); with ``preview``: ``preview.png``; with ``save_probability``: ``probability.nii.gz``
  (uint8, highest foreground probability × 255);
* ``done.json``, written last: the series' record and a fingerprint of the settings.

``OUTDIR/run_report.json`` (rewritten after every series) holds versions, device, bundle, options, and one
record per series with its outcome (``done``, ``resumed``, ``skipped``, ``failed``), reason and timings.

Crash safety: every file is written atomically (``m2f_med.io.atomic.atomic_write``), and ``done.json`` is
removed before a series is (re)done and written after all its files. A batch killed at any moment and
re-run with ``resume=True`` skips exactly the series whose ``done.json`` matches the current settings and
lists files that exist, removes leftover ``.partial`` temporaries, and redoes the rest.

One bad series (unreadable, wrong modality, undecodable, ambiguous selection) is recorded with its reason
and the batch goes on. Logs name series by their key, never by patient name, ID or input path.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import platform
import re
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from m2f_med import __version__
from m2f_med.data import repo_root
from m2f_med.inference.bundle_model import BundleModel, load_bundle
from m2f_med.inference.inferer import resolve_device
from m2f_med.inference.volume import predict_volume
from m2f_med.io.atomic import atomic_write
from m2f_med.io.dicom_warnings import collect_pydicom_warnings
from m2f_med.io.errors import VolumeError

__all__ = ["predict", "discover_inputs", "SeriesJob", "FORMATS", "SERIES_RULES", "DEFAULT_BUNDLE", "series_key"]

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg")
SERIES_RULES = ("per-study", "all", "uid:<SeriesInstanceUID>[,<UID>...]")
# The bundle used when none is given: the shipped default CT organ model of the checkout (issue 7). Absent in
# a non-editable install: then predict() asks for --bundle (see _resolve_model).
DEFAULT_BUNDLE: Path | None = repo_root() / "bundles" / "m2f_ct_organs"

REPORT_NAME = "run_report.json"
# names of image files in a study tree that are label maps / masks (ours: mask.nii.gz, probability.nii.gz)
_LABEL_NAME = re.compile(r"(^|[_.\-\s])(seg|segs|segmentation|label|labels|labelmap|mask|masks|probability)([_.\-\s]|$)")
DONE_NAME = "done.json"


@dataclass
class SeriesJob:
    """One unit of work (or a reason why a found series is not worked on).

    Attributes:
        key: output folder name (sanitised; see :func:`series_key`).
        kind: ``"dicom"`` or ``"file"``.
        input: the path the user gave that led here.
        source: the image file, or the series' folder (for the report).
        series: the indexed DICOM series (``None`` for files).
        series_uid: SeriesInstanceUID (DICOM).
        skip: reason the series is not segmented (excluded by the selection rules), else ``None``.
        error: reason the study could not be resolved to a series (counts as failed), else ``None``.
        volume_index: which volume of a 4-D file to take (``predict --volume-index``), else ``None``.
    """

    key: str
    kind: str
    input: str
    source: str
    series: Any = None
    series_uid: str | None = None
    skip: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    volume_index: int | None = None


def _clean(text: str, limit: int = 40) -> str:
    out = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_.-")
    return out[:limit] or "x"


def _digest(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def series_key(series_uid: str | None = None, path: str | os.PathLike | None = None) -> str:
    """Output folder name: ``series-<16 hex of sha256(UID)>`` for DICOM, ``<clean stem>-<8 hex of sha256(path)>`` for files.

    Never contains path separators or dots, so it cannot leave the output folder.
    """
    if series_uid:
        return f"series-{_digest(series_uid)}"
    if path is None:
        raise ValueError("series_key needs a SeriesInstanceUID or a path")
    p = Path(path)
    stem = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl.gz", ".gipl", ".img", ".hdr"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{_clean(stem)}-{_digest(str(p.resolve()), 8)}"


# --------------------------------------------------------------------------------------------- discovery
def _parse_rule(rule: str) -> tuple[str, list[str]]:
    rule = (rule or "per-study").strip()
    if rule in ("per-study", "all"):
        return rule, []
    if rule.startswith("uid:") or rule.startswith("uid="):
        uids = [u.strip() for u in rule[4:].split(",") if u.strip()]
        if uids:
            return "uid", uids
    raise ValueError(f"unknown series rule {rule!r}; use one of {', '.join(SERIES_RULES)}")


def _dicom_jobs(root: Path, given: str, rule: str, uids: list[str], modality: str | None) -> tuple[list[SeriesJob], list]:
    from m2f_med.io import NoSeriesError, SeriesSelectionError, index_dicom_tree, select_series
    from m2f_med.io.series_selection import series_exclusion

    index = index_dicom_tree(root)
    jobs: list[SeriesJob] = []

    def job(s, **kw) -> SeriesJob:
        folder = os.path.commonpath([str(p.parent) for p in s.paths]) if s.paths else str(root)
        return SeriesJob(key=series_key(s.series_uid), kind="dicom", input=given, source=folder, series=s,
                         series_uid=s.series_uid, extra={"modality": s.modality, "images": s.n_images,
                                                         "series_description": s.description}, **kw)

    if rule == "uid":
        for uid in uids:
            s = index.get(uid)
            if s is None:
                continue  # another input may hold it; reported after all inputs are indexed
            try:
                jobs.append(job(select_series(index, series_uid=uid)))
            except SeriesSelectionError as err:
                jobs.append(job(s, error=err.message))
        return jobs, index.skipped
    for study_uid, study in index.studies.items():
        if rule == "all":
            for s in study.series.values():
                reason = series_exclusion(s, modality=modality)
                jobs.append(job(s, skip=reason) if reason else job(s))
            continue
        try:
            chosen = select_series(index, modality=modality, study_uid=study_uid)
        except NoSeriesError as err:
            reasons = {s.series_uid: why for s, why in err.excluded if s.study_uid == study_uid}
            for s in study.series.values():
                why = reasons.get(s.series_uid, "not selected")
                if "image" not in s.kinds:  # SEG, RTSTRUCT, SR, ...: nothing to segment, not a failure
                    jobs.append(job(s, skip=why))
                else:
                    jobs.append(job(s, error=f"no series to segment in this study: {why}"))
            continue
        except SeriesSelectionError as err:
            first = err.message.splitlines()[0]
            for s in study.series.values():
                jobs.append(job(s, error=f"series selection failed: {first}"))
            continue
        for s in study.series.values():
            if s.series_uid == chosen.series_uid:
                jobs.append(job(s))
            else:
                reason = series_exclusion(s, modality=modality) or f"another series of the study was chosen ({rule})"
                jobs.append(job(s, skip=reason))
    return jobs, index.skipped


def discover_inputs(
    inputs: Iterable[str | os.PathLike], series_rule: str = "per-study", modality: str | None = None
) -> tuple[list[SeriesJob], list[dict[str, str]]]:
    """Turn user inputs into series jobs.

    Args:
        inputs: image files (NIfTI, NRRD, MHA, ...) and/or folders. A folder is indexed as a DICOM tree
            (recursively; ``m2f_med.io.index_dicom_tree``); image files inside it are segmented too, except
            those named like label maps or masks (``seg``, ``label``, ``mask``, ``probability`` as a word of
            the name), which are listed as skipped: give such a file explicitly to segment it.
        series_rule: ``"per-study"`` (``m2f_med.io.select_series`` per study: one series each),
            ``"all"`` (every series passing the selection filters), or ``"uid:UID1,UID2"``.
        modality: required DICOM Modality (e.g. the bundle's ``"CT"``), ``None`` for any.

    Returns:
        ``(jobs, unreadable)``: jobs in input order, de-duplicated by SeriesInstanceUID / file; and
        ``{"path", "reason"}`` for every file inside the folders that is not a readable DICOM instance.

    Raises:
        ValueError: an unknown series rule.
    """
    from m2f_med.io.image_files import image_format

    rule, uids = _parse_rule(series_rule)
    jobs: list[SeriesJob] = []
    unreadable: list[dict[str, str]] = []
    for given in inputs:
        p = Path(given)
        if p.is_file() and image_format(p) is not None:
            jobs.append(SeriesJob(key=series_key(path=p), kind="file", input=str(given), source=str(p)))
            continue
        if not p.exists():
            jobs.append(SeriesJob(key=series_key(path=p), kind="file", input=str(given), source=str(p),
                                  error="no such file or folder"))
            continue
        try:
            found, skipped = _dicom_jobs(p, str(given), rule, uids, modality)
        except VolumeError as err:
            jobs.append(SeriesJob(key=series_key(path=p), kind="dicom", input=str(given), source=str(p),
                                  error=err.message))
            continue
        jobs.extend(found)
        for path, why in skipped:
            path = Path(path)
            if image_format(path) is None:
                unreadable.append({"path": str(path), "reason": str(why)})
            elif _LABEL_NAME.search(path.name.lower()):  # a label map or one of our outputs, not an image
                jobs.append(SeriesJob(key=series_key(path=path), kind="file", input=str(given), source=str(path),
                                      skip="an image file named like a label map or mask (seg/label/mask); "
                                           "give it as an INPUT to segment it"))
            else:  # NIfTI / NRRD / MHA volumes inside a study tree are segmented like DICOM series
                jobs.append(SeriesJob(key=series_key(path=path), kind="file", input=str(given), source=str(path)))
    if rule == "uid":
        found_uids = {j.series_uid for j in jobs}
        for uid in uids:
            if uid not in found_uids:
                jobs.append(SeriesJob(key=series_key(uid), kind="dicom", input="", source="", series_uid=uid,
                                      error="SeriesInstanceUID not found in the inputs"))
    unique: dict[str, SeriesJob] = {}
    for j in jobs:
        unique.setdefault(j.key, j)
    return list(unique.values()), unreadable


# --------------------------------------------------------------------------------------------- one series
def _write_json(path: Path, obj: Any) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
    return path


def _remove_partials(folder: Path) -> int:
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and ".partial" in p.name:
                p.unlink(missing_ok=True)
                n += 1
    return n


def _completed(folder: Path, fingerprint: str) -> dict | None:
    """The previous record if ``folder`` holds a finished result for these settings, else ``None``."""
    done = folder / DONE_NAME
    try:
        record = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    if not all((folder / name).is_file() for name in record.get("files", [])):
        return None
    return record


def _load(job: SeriesJob):
    if job.kind == "dicom":
        from m2f_med.io import load_dicom_series

        return load_dicom_series(job.series)
    from m2f_med.io.image_files import load_image_file

    return load_image_file(job.source, volume_index=job.volume_index)


def _check_input(volume, job: SeriesJob, model: BundleModel, declared: str | None = None) -> None:
    from m2f_med.inference.modality import check_modality

    # a file without a modality (NIfTI) is taken as the user's --modality, or as CT if it looks like HU
    modality = check_modality(volume, model.modality, declared, source=job.source)
    if modality and not volume.meta.get("modality"):
        volume.meta["modality"] = modality
    in_ch = getattr(model.network, "in_channels", None)
    need = int(volume.shape[0]) * (2 * model.num_context_slices + 1)
    if in_ch is not None and int(in_ch) != need:
        raise VolumeError(job.source, f"{volume.shape[0]} image channel(s) x {2 * model.num_context_slices + 1} "
                                      f"slices = {need} inputs, but the network takes {in_ch}")


class _Prefetcher:
    """Loads the next series in a background thread while the current one is segmented.

    Decoding and resampling a DICOM series or a NIfTI file (pydicom, the JPEG decoders, nibabel's zlib,
    NumPy) mostly run outside the GIL, so on two or more cores the next volume is ready when the current one
    is done. At most one volume is loaded ahead (memory: two volumes at a time). A load that fails raises
    when its series' turn comes, so it is recorded for that series like any other failure.
    """

    def __init__(self, jobs: Sequence[SeriesJob], enabled: bool = True) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._order = [j.key for j in jobs]
        self._jobs = {j.key: j for j in jobs}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="m2f-prefetch") if enabled and len(jobs) > 1 else None
        self._pending: dict[str, Any] = {}

    def load(self, job: SeriesJob) -> tuple[Any, bool]:
        """The volume of ``job`` and whether it was loaded ahead; starts loading the series after it."""
        future = self._pending.pop(job.key, None)
        volume = future.result() if future is not None else _load(job)
        if self._pool is not None and job.key in self._order:  # next one loads while this one is segmented
            i = self._order.index(job.key)
            if i + 1 < len(self._order) and self._order[i + 1] not in self._pending:
                nxt = self._jobs[self._order[i + 1]]
                self._pending[nxt.key] = self._pool.submit(_load, nxt)
        return volume, future is not None

    def close(self) -> None:
        if self._pool is not None:
            for f in self._pending.values():
                f.cancel()
            self._pool.shutdown(wait=True)


def _run_series(
    job: SeriesJob, out: Path, model: BundleModel, opts: dict[str, Any], loader: _Prefetcher | None = None
) -> dict[str, Any]:
    """Segment one series and write its outputs; returns ``files``, ``timings`` and ``warnings``."""
    from m2f_med.io.writers import write_nifti

    timings: dict[str, float] = {}
    warnings: list[str] = []
    files: list[str] = []
    t = time.perf_counter()
    if loader is None:
        volume, ahead = _load(job), False
    else:
        volume, ahead = loader.load(job)
    timings["load_s"] = time.perf_counter() - t  # with prefetching: the time spent waiting for it

    _check_input(volume, job, model, opts.get("modality"))
    t = time.perf_counter()
    instances = None
    if model.thing_classes:
        mask, extras, instances = _predict_instances(volume, model, opts)
    else:
        mask, extras = predict_volume(
            volume, model, keep_probability=opts["save_probability"], postprocess=opts["postprocess"],
            progress=opts["progress"], **opts["inferer"],
        )
    timings["inference_s"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = {str(k): v for k, v in model.labels.items()}
    if "nifti" in opts["formats"]:
        write_nifti(mask, out / "mask.nii.gz", label=True)
        files.append("mask.nii.gz")
    if instances is not None:
        files += _write_instances(volume, instances, model, out, opts, warnings, extras["path"])
    stuff = set(model.labels) - set(model.thing_classes)
    if "dicom-seg" in opts["formats"] and stuff:
        if str(volume.meta.get("source_format")) != "dicom":
            warnings.append("dicom-seg not written: the input is not a DICOM series")
        elif not int(mask.as_tensor().count_nonzero()):
            warnings.append("dicom-seg not written: the mask is empty")
        else:
            from m2f_med.io.dicom_seg import write_dicom_seg

            algorithm = (model.metadata or {}).get("name") or "m2f-med"  # the model, named as the SEG's algorithm
            if job.series is not None and (getattr(job.series, "uid_missing", False)
                                           or not str(getattr(job.series, "study_uid", "") or "")):
                warnings.append("dicom-seg not written: the series has no StudyInstanceUID/SeriesInstanceUID "
                                "(anonymised), so a SEG could not reference it")
            else:
                try:  # the mask and the other outputs stand on their own; a SEG that cannot be made is a warning
                    write_dicom_seg(mask, volume, out / "mask.seg.dcm", labels=model.labels,
                                    algorithm=str(algorithm))
                    files.append("mask.seg.dcm")
                except VolumeError as err:
                    warnings.append(f"dicom-seg not written: {err.message}")
    _write_json(out / "labels.json", labels)
    files.append("labels.json")
    if opts["save_probability"] and extras["probability"] is not None:
        write_nifti(extras["probability"], out / "probability.nii.gz", label=True)
        files.append("probability.nii.gz")
    rows, qc_scan = None, None
    if opts["statistics"] or instances is None:
        from m2f_med.inference.statistics import structure_statistics, write_statistics

        conf = {c: extras["confidence"].get(name) for c, name in model.labels.items()}
        rows = structure_statistics(mask, volume, model.labels, modality=str(volume.meta.get("modality", "")),
                                    confidence=conf)
        if instances is None:  # organ models: QC verdicts (m2f_med.inference.qc); lesions have their own table
            from m2f_med.inference.qc import quality_control

            rows, qc_scan = quality_control(rows, mask, volume, meta=volume.meta,
                                            modality=str(volume.meta.get("modality", "")))
        if opts["statistics"]:
            write_statistics(rows, out / "statistics.json", out / "statistics.csv")
            files += ["statistics.json", "statistics.csv"]
    if opts["preview"] and instances is None:  # instance models: the lesion preview (_write_instances)
        from m2f_med.inference.preview import render_preview

        render_preview(volume, mask, out / "preview.png", modality=str(volume.meta.get("modality", "")),
                       names=model.labels, qc=rows)
        files.append("preview.png")
    timings["write_s"] = time.perf_counter() - t
    info = {
        "shape": [int(s) for s in volume.shape[1:]],
        "spacing_mm": [round(float(s), 4) for s in volume.meta.get("spacing_mm", ())],
        "modality": str(volume.meta.get("modality", "")),
        "inference_path": extras["path"],
        "inference_plan": extras.get("plan"),
        "loaded_ahead": ahead,
        "slices_per_s": round(volume.shape[-1] / max(timings["inference_s"], 1e-9), 3),
        "voxels": extras["voxels"],
        "confidence": {k: (None if v is None else round(v, 4)) for k, v in extras["confidence"].items()},
        "input_problems": list(volume.meta.get("problems", [])),
        "postprocessing_notes": extras["notes"],
    }
    if qc_scan is not None:
        info["qc"] = {r["name"]: {"verdict": r["qc"], "reasons": r["qc_reasons"]} for r in rows if r["qc"] != "absent"}
        info["qc_scan"] = qc_scan
    del volume, mask, extras
    return {"files": files, "timings": timings, "warnings": warnings, **info}


def _predict_instances(volume, model: BundleModel, opts: dict[str, Any]):
    """Instance inference (``m2f_med.inference.instances``): semantic mask, extras like ``predict_volume``'s."""
    import numpy as np
    from monai.data import MetaTensor

    from m2f_med.inference.instances import predict_instances
    from m2f_med.inference.volume import _label_meta

    inst, info = predict_instances(volume, model, callback=opts["inferer"].get("callback"))
    meta = _label_meta(volume, model.labels)
    mask = MetaTensor(torch.from_numpy(inst.semantic[None].astype(np.uint8)), affine=volume.affine, meta=meta)
    counts = np.bincount(inst.semantic.ravel(), minlength=model.num_classes + 1)
    confidence = {}
    for c, name in model.labels.items():
        ids = [i for i, lab in inst.labels.items() if lab == c]
        confidence[name] = float(np.mean([inst.scores[i] for i in ids])) if ids else None
    extras = {"probability": None, "confidence": confidence, "path": info["rule"], "notes": [],
              "voxels": {name: int(counts[c]) for c, name in model.labels.items()}}
    return mask, extras, inst


def _write_instances(volume, inst, model: BundleModel, out: Path, opts: dict[str, Any], warnings: list[str],
                     rule: str) -> list[str]:
    """``instances.nii.gz``, ``instances.json``, lesion preview, one-segment-per-lesion SEG; the file names."""
    from m2f_med.inference.instance_outputs import (
        NO_LESION_NOTE,
        instance_volume,
        render_lesion_preview,
        write_lesion_seg,
    )
    from m2f_med.inference.instances import instance_table, write_instances_json
    from m2f_med.inference.lesion_qc import lesion_quality_control
    from m2f_med.io.writers import write_nifti

    files = []
    rows = instance_table(inst, volume, model.labels, low_score=model.instance_settings.low_score)
    # QC against what the model was trained on (m2f_med.inference.lesion_qc): an input unlike the training
    # crops is said once per series, and each lesion carries its verdict
    rows, qc_scan = lesion_quality_control(
        rows, inst.instance_map, np.asarray(volume[0]), np.asarray(volume.affine), model.lesion_qc,
        modality=str(volume.meta.get("modality") or model.modality or ""))
    warnings.extend(f"lesion QC: {reason}" for reason in qc_scan["reasons"])
    ids = instance_volume(inst, volume)
    if "nifti" in opts["formats"]:
        write_nifti(ids, out / "instances.nii.gz", label=True)
        files.append("instances.nii.gz")
    note = "" if rows else NO_LESION_NOTE
    if not rows:
        warnings.append(NO_LESION_NOTE)
    seg_name = None
    algorithm = str((model.metadata or {}).get("name") or "m2f-med")
    if "dicom-seg" in opts["formats"]:
        if str(volume.meta.get("source_format")) != "dicom":
            warnings.append("dicom-seg not written: the input is not a DICOM series")
        elif rows:
            write_lesion_seg(ids, volume, out / "instances.seg.dcm", rows, algorithm=algorithm)
            seg_name = "instances.seg.dcm"
            files.append(seg_name)
        else:
            warnings.append("dicom-seg not written: no lesion found")
    write_instances_json(out / "instances.json", rows, model.labels, model.thing_classes, note=note,
                         rule=rule, algorithm=algorithm, qc_settings=model.lesion_qc.as_dict(), qc_scan=qc_scan,
                         instance_map="instances.nii.gz", semantic_mask="mask.nii.gz", dicom_seg=seg_name)
    files.append("instances.json")
    if opts["preview"]:
        render_lesion_preview(volume, inst.instance_map, out / "preview.png", rows,
                              modality=str(volume.meta.get("modality", "")),
                              scan_note=_lesion_scan_note(qc_scan, model))
        files.append("preview.png")
    return files


def _lesion_scan_note(qc_scan: dict[str, Any], model: BundleModel) -> str:
    """The preview's short form of the scan-level lesion QC (the full reasons are in the run's warnings)."""
    if not qc_scan["reasons"]:
        return ""
    lr, ap = qc_scan["field_of_view_mm"][:2]
    limit = model.lesion_qc.max_field_of_view_mm
    return (f"QC: scan {lr:.0f} x {ap:.0f} mm, larger than the training images (at most {limit:.0f} mm): "
            "lesions not validated")


# --------------------------------------------------------------------------------------------- the batch
def _environment(device: torch.device) -> dict[str, Any]:
    import monai
    import numpy
    import transformers

    env = {
        "m2f_med": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "monai": monai.__version__, "transformers": transformers.__version__,
        "numpy": numpy.__version__, "device": str(device),
    }
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


def _resolve_model(bundle: str | os.PathLike | BundleModel | None, device: str | torch.device) -> BundleModel:
    if isinstance(bundle, BundleModel):
        return bundle.to(device)
    if bundle is None:
        if DEFAULT_BUNDLE is None or not Path(DEFAULT_BUNDLE).is_dir():
            raise VolumeError(DEFAULT_BUNDLE, "no bundle given and no default bundle installed; pass --bundle PATH")
        try:
            return load_bundle(DEFAULT_BUNDLE, device=device)
        except VolumeError as err:
            raise VolumeError(err.path, f"{err.message} (default bundle {DEFAULT_BUNDLE}; pass --bundle PATH "
                                        "to use another)") from None
    return load_bundle(bundle, device=device)


def predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    bundle: str | os.PathLike | BundleModel | None = None,
    formats: Sequence[str] | str = ("nifti",),
    series_rule: str = "per-study",
    resume: bool = False,
    device: str | torch.device = "cpu",
    statistics: bool = False,
    preview: bool = False,
    save_probability: bool = False,
    postprocess: bool = True,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
    flip_tta: bool = False,
    slab_size: int | None = None,
    sw_batch_size: int | None = None,
    modality: str | None = None,
    quiet: bool = False,
    plan: str | None = None,
    threads: int | None = None,
    backend: str = "auto",
    prefetch: bool = True,
    volume_index: int | None = None,
) -> dict[str, Any]:
    """Segment every series found in ``inputs`` and write masks, labels, statistics and a run report.

    Args:
        inputs: NIfTI (or NRRD, MHA, ...) files, DICOM series folders, or folder trees of many studies.
        output_dir: where per-series folders and ``run_report.json`` go (created).
        bundle: bundle folder or a loaded :class:`BundleModel`; ``None`` = :data:`DEFAULT_BUNDLE`.
        formats: any of ``"nifti"``, ``"dicom-seg"`` (list or comma-separated string).
        series_rule: ``"per-study"``, ``"all"`` or ``"uid:UID1,UID2"`` (see :func:`discover_inputs`).
        resume: skip series whose ``done.json`` matches these settings.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        statistics: write ``statistics.json`` / ``.csv`` (volume mL, mean / std HU for CT).
        preview: write ``preview.png``.
        save_probability: write ``probability.nii.gz`` (uint8 highest foreground probability × 255).
        postprocess: apply the bundle's ``label_postprocessing``.
        amp: autocast on CUDA (``amp_dtype`` ``"bfloat16"`` or ``"float16"``); ignored on CPU.
        flip_tta: average over in-plane flips.
        slab_size: slices per slab (memory / speed trade-off); ``None`` = inferer default.
        sw_batch_size: windows per forward pass; ``None`` = the bundle's.
        plan: inference plan ``"auto"``, ``"whole-slice"`` or ``"sliding-window"``; ``None`` = the bundle's
            ``inference_plan`` (see :mod:`m2f_med.inference.inferer`).
        threads: torch CPU threads; ``None`` = one per usable core (:func:`m2f_med.threads.configure_threads`).
        backend: ``"auto"`` (ONNX Runtime on CPU where an export of the input shape is cached, else eager),
            ``"onnx"`` (export once per shape, cached) or ``"torch"``; see
            :mod:`m2f_med.inference.onnx_backend`. The model is loaded once for the whole batch.
        prefetch: load the next series in a background thread while the current one is segmented.
        modality: DICOM Modality to select; default the bundle's ``modality`` (if any). For files without a
            modality (NIfTI) it declares theirs: without it, a CT model refuses a file whose intensities do
            not look like HU (:func:`m2f_med.inference.modality.check_modality`).
        quiet: no progress bars.
        volume_index: which volume (0-based) of each 4-D NIfTI/NRRD input to segment; ``None``: a 4-D file
            fails with a message naming ``--volume-index`` (DICOM inputs ignore it).

    Returns:
        The run report (also written to ``output_dir/run_report.json``): ``environment``, ``bundle``,
        ``options``, ``summary`` (counts of ``done``, ``resumed``, ``skipped``, ``failed``), ``series`` (one
        record each: ``key``, ``status``, ``reason``, ``input``, ``source``, ``files``, ``timings``, ...) and
        ``unreadable_files``.

    Raises:
        VolumeError: the bundle cannot be loaded (nothing is processed then).
        ValueError: unknown format or series rule; CUDA asked for but unavailable.
    """
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    fmts = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise ValueError(f"unknown output format(s) {bad or fmts}; use {', '.join(FORMATS)}")
    _parse_rule(series_rule)
    dev = resolve_device(device)
    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"unknown backend {backend!r}; use auto, torch or onnx")
    model = _resolve_model(bundle, dev)
    model.backend = backend
    _ = model.predictor  # fail now (e.g. the onnx extra missing), not at the first series
    out_root = Path(output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    bundle_info = model.describe()
    from m2f_med.threads import configure_threads

    n_threads = configure_threads(threads)
    inferer_opts = {"amp": amp, "amp_dtype": amp_dtype, "flip_tta": flip_tta, "slab_size": slab_size,
                    "sw_batch_size": sw_batch_size, "plan": plan}
    options = {"formats": fmts, "series_rule": series_rule, "resume": resume, "statistics": statistics,
               "preview": preview, "save_probability": save_probability, "postprocess": postprocess,
               "amp": amp and dev.type == "cuda", "amp_dtype": amp_dtype, "flip_tta": flip_tta,
               "slab_size": slab_size, "sw_batch_size": sw_batch_size, "plan": plan or model.inference_plan,
               **({"volume_index": volume_index} if volume_index is not None else {})}
    fingerprint = _digest(json.dumps({k: v for k, v in options.items() if k != "resume"}, sort_keys=True)
                          + json.dumps(bundle_info, sort_keys=True, default=str), 32)
    jobs, unreadable = discover_inputs(inputs, series_rule, modality or model.modality)
    report: dict[str, Any] = {
        "m2f_med_version": __version__, "started": started, "finished": None,
        "environment": {**_environment(dev), "torch_threads": n_threads,
                        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "backend": backend}, "bundle": bundle_info, "options": options,
        "summary": {}, "series": [], "unreadable_files": unreadable,
    }
    for j in jobs:
        if j.kind == "file":
            j.volume_index = volume_index
    run_opts = {"modality": modality, "formats": fmts, "statistics": statistics, "preview": preview, "save_probability": save_probability,
                "postprocess": postprocess, "progress": not quiet, "inferer": inferer_opts}
    todo = [j for j in jobs if j.skip is None and j.error is None]
    log.info("%d series to segment, %d skipped, %d unresolved", len(todo),
             sum(j.skip is not None for j in jobs), sum(j.error is not None for j in jobs))
    bar = tqdm(total=len(todo), unit="series", disable=quiet, desc="series")
    runnable = [j for j in todo if not (resume and _completed(out_root / j.key, fingerprint) is not None)]
    loader = _Prefetcher(runnable, enabled=prefetch)
    # Ctrl-C / SIGTERM: the report says what was done (finished = null, interrupted set), then stop
    in_main = threading.current_thread() is threading.main_thread()
    old_handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    _SIGNAL_SEEN.clear()
    # the series being segmented: a signal may land after its done.json was written but before its record
    # reached the report, and the report must still list it as done (it is done on disk; resume skips it)
    current: tuple[dict[str, Any], Path] | None = None
    try:
        for n, job in enumerate(jobs, 1):
            if _SIGNAL_SEEN:
                raise _Terminated() if _SIGNAL_SEEN["name"] == "SIGTERM" else KeyboardInterrupt()
            record: dict[str, Any] = {"key": job.key, "kind": job.kind, "input": job.input, "source": job.source,
                                      "series_uid": job.series_uid, **job.extra}
            if job.skip is not None or job.error is not None:
                record.update(status="skipped" if job.skip is not None else "failed", reason=job.skip or job.error,
                              message=job.skip or job.error)
                log.info("series %s: %s (%s)", job.key, record["status"], record["reason"])
                report["series"].append(record)
                continue
            out = out_root / job.key
            previous = _completed(out, fingerprint) if resume else None
            if previous is not None:
                record.update(previous.get("record", {}), status="resumed")
                log.info("series %s: already done, skipped (resume)", job.key)
            else:
                (out / DONE_NAME).unlink(missing_ok=True)  # from here on this folder is "not done"
                current = (record, out)
                _remove_partials(out)
                out.mkdir(parents=True, exist_ok=True)
                t = time.perf_counter()
                try:
                    with collect_pydicom_warnings() as pydicom_warnings:  # e.g. SEG writing reading the sources
                        result = _run_series(job, out, model, run_opts, loader)
                    result["warnings"] = list(result.get("warnings", [])) + pydicom_warnings.lines()
                    record.update(status="done", reason=None, message=None, **result)
                    record["timings"]["total_s"] = time.perf_counter() - t
                    _write_json(out / DONE_NAME, {"fingerprint": fingerprint, "files": result["files"],
                                                  "record": {k: v for k, v in record.items() if k != "status"}})
                    log.info("series %s: done in %.1f s", job.key, record["timings"]["total_s"])
                except Exception as err:  # noqa: BLE001 - one bad series must not stop the batch
                    reason = str(err) if isinstance(err, VolumeError) else f"{type(err).__name__}: {err}"
                    short = err.message if isinstance(err, VolumeError) else f"{type(err).__name__}: {err}"
                    record.update(status="failed", reason=reason, message=short,
                                  timings={"total_s": time.perf_counter() - t})
                    log.warning("series %s (%d of %d) failed: %s", job.key, n, len(jobs), short)
                    log.debug("series %s failure", job.key, exc_info=True)
                gc.collect()
            report["series"].append(record)
            current = None
            bar.update(1)
            _finish(report, out_root, t_start, final=False)
        bar.close()
        loader.close()
    except KeyboardInterrupt as err:
        report["interrupted"] = _SIGNAL_SEEN.get("name") or ("SIGTERM" if isinstance(err, _Terminated) else "SIGINT")
        if (current is not None and current[0].get("status") == "done" and (current[1] / DONE_NAME).is_file()
                and all(r is not current[0] for r in report["series"])):
            report["series"].append(current[0])
        bar.close()
        loader.close()
        _finish(report, out_root, t_start, final=False)
        raise
    finally:
        for sig, old in old_handlers.items():
            if old is not None:  # None: a handler not installed from Python, left as it was
                signal.signal(sig, old)
    return _finish(report, out_root, t_start, final=True)


def _finish(report: dict[str, Any], out_root: Path, t_start: float, final: bool) -> dict[str, Any]:
    statuses = [r["status"] for r in report["series"]]
    report["summary"] = {s: statuses.count(s) for s in ("done", "resumed", "skipped", "failed")}
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    if final:
        report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_json(out_root / REPORT_NAME, report)
    write_index(report, out_root)
    return report


INDEX_COLUMNS = ("input", "source", "series_description", "modality", "output", "status", "message")


def write_index(report: dict[str, Any], out_root: Path) -> None:
    """``index.json`` and ``index.csv`` beside the run report: which input went to which output folder.

    The output folders keep their hashed names (safe whatever the DICOM tags hold); the index makes them
    findable. Columns: input path as given, source (file or series folder), SeriesDescription, Modality,
    output folder (relative to ``out_root``; empty when nothing was written), status, message. No patient
    names or IDs.
    """
    import csv
    import io

    rows = []
    for r in report["series"]:
        written = r["status"] in ("done", "resumed")
        rows.append({"input": r.get("input", ""), "source": r.get("source", ""),
                     "series_description": r.get("series_description", ""), "modality": r.get("modality", ""),
                     "output": r["key"] if written else "", "status": r["status"],
                     "message": r.get("message") or "; ".join(r.get("warnings") or [])})
    _write_json(out_root / "index.json", rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out_root / "index.csv") as tmp:
        tmp.write_text(buf.getvalue())


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a run, handled like Ctrl-C: the report is written, then the run stops."""


_SIGNAL_SEEN: dict[str, str] = {}


def _on_signal(signum, frame):
    # raised where the signal lands; an exception raised inside a __del__ would be swallowed (and printed)
    # by Python, so there only the flag is set and the batch loop stops before the next series
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    _SIGNAL_SEEN["name"] = name
    if frame is None or frame.f_code.co_name != "__del__":
        raise _Terminated() if name == "SIGTERM" else KeyboardInterrupt()
