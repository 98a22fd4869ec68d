"""Lesion-wise evaluation of a model on labelled cases (bundle ``evaluate.yaml`` of ``m2f_ct_lesions``).

Per case: the image is read with ``m2f_med.io.load_volume``, the reference with
:func:`m2f_med.bundle.label_io.load_label` (label map, DICOM-SEG or RTSTRUCT drawn onto the image), the
prediction is :func:`m2f_med.inference.instances.predict_instances` on the image's own grid (query linking
for Mask2Former, connected components for other networks), reference lesions are the 3D connected
components of the reference, and :func:`m2f_med.evaluation.lesion_metrics` compares them. Writes
``lesion_metrics.csv`` (one row per case) and ``lesion_summary.json`` (mean patient Dice, pooled
sensitivity / precision / F1, SQ / RQ / PQ; definitions in :mod:`m2f_med.evaluation.lesions`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from m2f_med.io.atomic import atomic_write

__all__ = ["LesionEvaluation", "evaluate_lesions", "predict_case_lesions"]

log = logging.getLogger(__name__)


def evaluate_lesions(model, cases: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike | None = None,
                     lesion_classes: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``cases`` lesion by lesion.

    Args:
        model: a :class:`~m2f_med.inference.bundle_model.BundleModel` (with ``thing_classes``).
        cases: datalist entries with ``image``, ``label`` and optionally ``patient`` / ``label_names``.
        output_dir: where ``lesion_metrics.csv`` / ``lesion_summary.json`` go; ``None`` writes nothing.
        lesion_classes: model label ids that are lesions (default ``model.thing_classes``).

    Returns:
        ``{"cases": [row, ...], "summary": {...}}``; a row holds ``patient``, the
        :class:`~m2f_med.evaluation.LesionCounts` fields and metrics, and ``seconds``.

    Raises:
        VolumeError: an unreadable image or label (names the file).
        ValueError: no cases.
    """
    from m2f_med.evaluation import lesion_metrics, summarise_lesion_metrics

    if not cases:
        raise ValueError("no cases to evaluate")
    classes = tuple(lesion_classes or model.thing_classes or (1,))
    rows, counts = [], []
    for case in cases:
        t0 = time.perf_counter()
        pred, _, ref = predict_case_lesions(model, case, classes)
        m = lesion_metrics(pred, ref)
        counts.append(m)
        name = str(case.get("patient") or Path(str(case["image"])).name)
        rows.append({"patient": name, **m.as_dict(), "seconds": round(time.perf_counter() - t0, 2)})
        log.info("%s: Dice %.3f, TP %d FP %d FN %d", name, m.dice, m.tp, m.fp, m.fn)
    summary = summarise_lesion_metrics(counts)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "lesion_metrics.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with atomic_write(out / "lesion_summary.json") as tmp:
            Path(tmp).write_text(json.dumps(_json_safe(summary), indent=2), encoding="utf-8")
    return {"cases": rows, "summary": summary}


def predict_case_lesions(model, case: Mapping[str, Any], lesion_classes: Sequence[int] | None = None
                         ) -> tuple[np.ndarray, dict[int, float], np.ndarray]:
    """Predicted and reference lesions of one labelled case, on the image's own grid.

    Args:
        model: a :class:`~m2f_med.inference.bundle_model.BundleModel` (with ``thing_classes``).
        case: a datalist entry with ``image`` and ``label`` (label map, DICOM-SEG or RTSTRUCT).
        lesion_classes: model label ids that are lesions (default ``model.thing_classes``).

    Returns:
        ``(pred, scores, ref)``: ``(X, Y, Z)`` int32 predicted instance ids (lesion classes only, as
        :func:`~m2f_med.inference.instances.predict_instances` gives them), ``{id: score in [0, 1]}``, and the
        ``(X, Y, Z)`` reference instances (3D connected components, :func:`~m2f_med.evaluation.reference_instances`).

    Raises:
        VolumeError: an unreadable image or label (names the file).
        ValueError: the label is on another grid than the image.
    """
    from m2f_med.bundle.label_io import load_label
    from m2f_med.evaluation import reference_instances
    from m2f_med.inference.instances import predict_instances
    from m2f_med.io import load_volume

    classes = tuple(lesion_classes or model.thing_classes or (1,))
    image = load_volume(case["image"])
    label, _ = load_label(case["label"], image)
    ref = np.asarray(label[0].detach().cpu().numpy() if isinstance(label, torch.Tensor) else label[0])
    if ref.shape != tuple(image.shape[1:]):
        raise ValueError(f"{case['label']}: label grid {ref.shape} differs from the image {tuple(image.shape[1:])}")
    inst, _ = predict_instances(image, model)
    pred = np.where(np.isin(inst.semantic, classes), inst.instance_map, 0)
    return pred, dict(inst.scores), reference_instances(ref, classes)


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    """NaN (e.g. SQ without any match) as ``null``: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


class LesionEvaluation:
    """Bundle glue: build the model from config pieces, load the weights, evaluate (``run``).

    Args:
        network: the ``nn.Module`` of the bundle (``@network``).
        ckpt_path: a state dict file (``models/model.pt`` or a run's best checkpoint).
        cases: the datalist entries to evaluate.
        output_dir: where the CSV / JSON go.
        labels, num_context_slices, pixdim, intensity, thing_classes, instance_inference: the bundle's model
            contract keys (as in ``inference.yaml``).
        device: torch device.
    """

    def __init__(self, network: nn.Module, ckpt_path: str, cases: Sequence[Mapping[str, Any]], output_dir: str,
                 labels: Mapping[str, str], num_context_slices: int, pixdim: Sequence[float],
                 intensity: Mapping[str, Any], thing_classes: Sequence[int],
                 instance_inference: Mapping[str, Any] | None = None, device: Any = "cpu"):
        self.network, self.ckpt_path, self.cases, self.output_dir = network, ckpt_path, list(cases), output_dir
        self.contract = dict(labels=labels, num_context_slices=int(num_context_slices), pixdim=pixdim,
                             intensity=intensity, thing_classes=tuple(thing_classes),
                             instance_settings=instance_inference or {})
        self.device = device

    def run(self) -> dict[str, Any]:
        """Load the weights, evaluate every case and write the files; returns :func:`evaluate_lesions`'s dict."""
        from m2f_med.inference.bundle_model import BundleModel, load_state_dict

        self.network.load_state_dict(load_state_dict(self.ckpt_path), strict=True)
        model = BundleModel(network=self.network, **self.contract).to(self.device)
        result = evaluate_lesions(model, self.cases, self.output_dir)
        s = result["summary"]
        log.info("lesions: %d patients, Dice %.3f, F1 %.3f, PQ %.3f", s["patients"], s["dice_mean"], s["f1"], s["pq"])
        print(json.dumps(_json_safe(s), indent=2))
        return result
