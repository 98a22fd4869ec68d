"""Decathlon-style datalists for the bundles: paths relative to ``dataset_dir``, per-case label names.

The file format is MONAI's (``monai.data.load_decathlon_datalist``, after the Medical Segmentation
Decathlon ``dataset.json``): sections ``training`` / ``validation`` / ``test`` hold entries with ``image``
(a NIfTI/NRRD/MHA file or a DICOM series folder, or a list of co-registered volumes stacked as channels,
each with its own entry of the bundle's ``intensity`` list) and ``label`` (a label map file, DICOM-SEG or RTSTRUCT).
Two m2f-med additions, both optional:

* a top-level ``labels`` dict, ``{source_id: name}``, saying what the ids in the label files mean
  (Decathlon's own key; e.g. TotalSegmentator's ``{"5": "liver", ...}``);
* a per-entry ``label_names`` dict of the same form, for a case whose label file uses other ids
  (e.g. a manual spleen mask with ``{"1": "spleen"}``). Entries without one get the top-level ``labels``.

:class:`m2f_med.bundle.labels.RemapLabelsByNamed` turns these names into the model's ids.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from m2f_med.io.errors import VolumeError

__all__ = ["LABEL_NAMES_KEY", "SECTIONS", "fold_datalist", "load_datalist", "read_label_names", "require_cases"]

LABEL_NAMES_KEY = "label_names"
SECTIONS = ("training", "validation", "test")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise VolumeError(path, "datalist file not found") from err
    except json.JSONDecodeError as err:
        raise VolumeError(path, f"not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise VolumeError(
            path, "a datalist must be a JSON object with 'training' / 'validation' / 'test' lists"
        )
    return data


def read_label_names(datalist: str | os.PathLike) -> dict[str, str]:
    """The top-level ``labels`` of a datalist, ``{source_id (str): name}``; empty if it has none.

    Raises:
        VolumeError: the file is missing or not a JSON object, or ``labels`` is not an object.
    """
    path = Path(datalist)
    labels = _read_json(path).get("labels", {})
    if not isinstance(labels, dict):
        raise VolumeError(path, '\'labels\' must map label ids to names, e.g. {"5": "liver"}')
    return {str(k): str(v) for k, v in labels.items()}


def load_datalist(
    datalist: str | os.PathLike,
    section: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Read one section of a datalist, with absolute paths and each case's label names.

    Args:
        datalist: the datalist JSON.
        section: ``"training"``, ``"validation"``, ``"test"`` (or any list key of the file).
        dataset_dir: folder the relative ``image`` / ``label`` paths are resolved against (MONAI's
            ``base_dir``); ``None`` means the datalist's own folder.
        check_files: raise if a listed image or label does not exist, before any heavy work starts.

    Returns:
        A list of dicts (a new copy; the file is not modified) with ``image`` and, where given, ``label`` as
        absolute path strings, and ``label_names`` (``{source_id: name}``) for every case with a label when
        the file or the entry names its ids. A missing or empty section gives ``[]`` for ``validation`` and
        ``test``.

    Raises:
        VolumeError: the datalist is missing or malformed, the ``training`` section is missing, or (with
            ``check_files``) a listed file does not exist; the message names the file and the fix.
    """
    path = Path(datalist)
    data = _read_json(path)
    entries = data.get(section)
    if entries is None:
        if section == "training":
            raise VolumeError(path, "the datalist has no 'training' section")
        return []
    if not isinstance(entries, list):
        raise VolumeError(path, f"section {section!r} must be a list of entries")
    if not entries:
        return []
    default_names = read_label_names(path)
    base = Path(dataset_dir) if dataset_dir is not None else path.parent
    cases = load_decathlon_datalist(path, is_segmentation=True, data_list_key=section, base_dir=base)
    out: list[dict[str, Any]] = []
    for case in cases:
        case = copy.deepcopy(case)
        if "image" not in case:
            raise VolumeError(path, f"an entry of {section!r} has no 'image': {case}")
        if "label" in case:
            names = case.get(LABEL_NAMES_KEY) or default_names
            if names:
                case[LABEL_NAMES_KEY] = {str(k): str(v) for k, v in names.items()}
        if check_files:
            for key in ("image", "label"):
                paths = case.get(key, [])
                # a multi-modal image lists several co-registered volumes (stacked as channels)
                for one in paths if isinstance(paths, (list, tuple)) else [paths]:
                    if Path(one).exists():
                        continue
                    raise VolumeError(
                        one,
                        f"listed as {key!r} in {path} [{section}] but not found; "
                        f"is the dataset folder right? (dataset_dir={base}; override with --dataset_dir)",
                    )
        out.append(case)
    return out


def fold_datalist(
    datalist: str | os.PathLike,
    folds: str | os.PathLike,
    fold: int | None,
    section: str = "training",
    dataset_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """One role of a patient-level cross-validation split: the cases of ``training`` for one fold.

    The split file (e.g. ``bundles/m2f_ct_lesions/configs/folds.json``) is
    ``{"splits": [{"fold": 0, "test": [patient, ...], "validation": [patient, ...]}, ...]}``; patients are
    the ``patient`` keys of the datalist's ``training`` entries. For fold ``f``: ``test`` = the fold's
    patients (never trained on, never used to choose a checkpoint), ``validation`` = its validation patients
    (checkpoint choice), ``training`` = every other patient. ``fold=None`` means no cross-validation:
    ``training`` is every patient, ``validation`` and ``test`` are empty (the final model).

    Args:
        datalist: the datalist JSON (all patients in its ``training`` section, each with ``patient``).
        folds: the split JSON.
        fold: the fold index, or ``None``.
        section: ``"training"``, ``"validation"`` or ``"test"``.
        dataset_dir: as for :func:`load_datalist`.
        check_files: as for :func:`load_datalist`.

    Returns:
        The cases (dicts as from :func:`load_datalist`) of that role, in datalist order.

    Raises:
        VolumeError: the split is malformed, names a patient not in the datalist, puts a patient in two
            test folds or in both test and validation, or the fold does not exist.
    """
    cases = load_datalist(datalist, "training", dataset_dir, check_files)
    if section not in SECTIONS:
        raise VolumeError(Path(folds), f"unknown section {section!r}; choose one of {SECTIONS}")
    if fold is None:
        return cases if section == "training" else []
    split_path = Path(folds)
    splits = _read_json(split_path).get("splits")
    if not isinstance(splits, list) or not splits:
        raise VolumeError(split_path, "a split file needs a non-empty 'splits' list")
    patients = [c.get("patient") for c in cases]
    if None in patients:
        raise VolumeError(Path(datalist), "every training entry needs a 'patient' key for cross-validation")
    seen: set[str] = set()
    for s in splits:
        test = set(s.get("test", []))
        unknown = (test | set(s.get("validation", []))) - set(patients)
        if unknown:
            raise VolumeError(split_path, f"fold {s.get('fold')}: patients not in the datalist: {sorted(unknown)}")
        if test & seen:
            raise VolumeError(split_path, f"patients in two test folds: {sorted(test & seen)}")
        if test & set(s.get("validation", [])):
            raise VolumeError(split_path, f"fold {s.get('fold')}: patients both test and validation")
        seen |= test
    chosen = [s for s in splits if int(s.get("fold", -1)) == int(fold)]
    if not chosen:
        raise VolumeError(split_path, f"no fold {fold}; the file has {[s.get('fold') for s in splits]}")
    test, val = set(chosen[0].get("test", [])), set(chosen[0].get("validation", []))
    if section == "test":
        return [c for c in cases if c["patient"] in test]
    if section == "validation":
        return [c for c in cases if c["patient"] in val]
    return [c for c in cases if c["patient"] not in test | val]


def require_cases(data: Sequence[Mapping[str, Any]], datalist: str | os.PathLike, section: str) -> int:
    """Check, at ``run`` time, that an inference config has cases to segment.

    The bundle's default ``data`` (the datalist's ``section``) needs the sample-data folder; without it
    ``data`` is empty so that the config still parses anywhere (MONAI Label, MONAI Deploy). Running with no
    cases would silently do nothing, so ``run`` calls this first.

    Args:
        data: the ``data`` list of the config (dicts with ``"image"``).
        datalist: the datalist file, named in the error.
        section: the datalist section, named in the error.

    Returns:
        The number of cases.

    Raises:
        VolumeError: ``data`` is empty (says to pass ``--data`` or set ``M2F_MED_DATA``).
    """
    from m2f_med.data import DATA_ENV

    if not data:
        raise VolumeError(datalist, f"no cases to segment: pass --data \"[{{'image': ...}}]\" or set {DATA_ENV} "
                                    f"to the sample-data folder for the {section!r} section")
    return len(data)
