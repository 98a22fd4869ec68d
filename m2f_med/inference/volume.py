"""Segment one volume: model space → slab-wise inference → source grid → post-processing (``predict_volume``).

The napari plugin and the batch command both call :func:`predict_volume`. The mask it returns lies on the
input's grid voxel for voxel: same shape, the input's affine (exactly, not recomputed) and its DICOM
identifiers in ``meta``, so it can be written as NIfTI or as a DICOM-SEG that references the source series.

Two paths (see :mod:`m2f_med.inference.preprocessing`):

* slab path (the usual axial CT/MR with ``pixdim[2] <= 0``): everything happens per slab of slices and the
  probabilities are resampled back bilinearly before the argmax;
* whole-volume path (the slice axis is not the model's axial axis, or ``pixdim`` resamples Z): the volume
  is oriented and resampled once (MONAI ``Orientation`` + ``Spacing``), segmented slab by slab there, and
  the uint8 mask is put back on the source grid with MONAI ``SpatialResample`` (nearest neighbour).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from m2f_med.inference.bundle_model import BundleModel
from m2f_med.inference.inferer import SlabResult
from m2f_med.inference.postprocessing import postprocess_label
from m2f_med.inference.preprocessing import ModelSpace
from m2f_med.io.volume import PROBLEMS, make_volume

__all__ = ["predict_volume", "LABEL_NAMES"]

log = logging.getLogger(__name__)

LABEL_NAMES = "label_names"  # meta key of the returned mask: {id: name}


def _nearest_onto(label: torch.Tensor, src_affine, dst_affine: np.ndarray, shape) -> torch.Tensor:
    """Nearest-neighbour resampling of a uint8 ``(1, x, y, z)`` map onto the ``dst_affine`` grid of ``shape``."""
    img = MetaTensor(label.float(), affine=torch.as_tensor(src_affine, dtype=torch.float64))
    out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
        img, dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64), spatial_size=tuple(int(s) for s in shape)
    )
    return torch.as_tensor(out).round().clamp(0, 255).to(torch.uint8)


def _label_counts(label: np.ndarray, n: int, chunk: int = 32) -> np.ndarray:
    """Voxels per label value, slab by slab: ``np.bincount`` widens its input to int64 (8 bytes per voxel)."""
    counts = np.zeros(n, dtype=np.int64)
    for z0 in range(0, label.shape[-1], chunk):
        counts += np.bincount(label[..., z0:z0 + chunk].ravel(), minlength=n)[:n]
    return counts


def _label_meta(volume: MetaTensor, labels: dict[int, str]) -> dict[str, Any]:
    skip = {"affine", "original_affine", "spatial_shape", "space", "spacing_mm"}
    meta = {k: copy.deepcopy(v) for k, v in volume.meta.items() if k not in skip}
    meta[PROBLEMS] = list(volume.meta.get(PROBLEMS, []))
    meta[LABEL_NAMES] = dict(labels)
    return meta


def predict_volume(
    volume: MetaTensor,
    model: BundleModel,
    *,
    keep_probability: bool = False,
    postprocess: bool = True,
    progress: bool = False,
    **inferer_options: Any,
) -> tuple[MetaTensor, dict[str, Any]]:
    """Segment one volume with a model and return the mask on the volume's own grid.

    Args:
        volume: ``(C, X, Y, Z)`` MetaTensor with an RAS affine (mm), e.g. from ``m2f_med.io.load_volume``;
            ``C`` must equal the model's modalities. Never modified.
        model: a :class:`~m2f_med.inference.bundle_model.BundleModel` (``load_bundle``).
        keep_probability: also return ``extras["probability"]``, a ``(1, X, Y, Z)`` uint8 MetaTensor of the
            highest foreground probability × 255.
        postprocess: apply the model's ``postprocessing`` spec.
        progress: tqdm bar over slices.
        **inferer_options: overrides of :class:`~m2f_med.inference.inferer.VolumeInferer` settings
            (``device``, ``plan``, ``amp``, ``amp_dtype``, ``flip_tta``, ``slab_size``, ``sw_batch_size``, ``roi_size``,
            ``overlap``, ``mode``, ``callback`` — ``callback(done, total)`` reports slices and may raise to
            cancel).

    Returns:
        ``(mask, extras)``: ``mask`` is a ``(1, X, Y, Z)`` uint8 MetaTensor with exactly the input's affine,
        its meta (DICOM UIDs, source paths, modality) plus ``meta["label_names"]``; ``extras`` holds
        ``probability`` (or ``None``), ``confidence`` ``{name: mean probability of the predicted class
        over its voxels, before post-processing}``, ``voxels`` ``{name: count}``, ``path``
        (``"slab"`` / ``"whole-volume"``), ``plan`` (the :class:`~m2f_med.inference.inferer.InferencePlan`
        as a dict), ``seconds`` and ``notes`` (post-processing changes).

    Raises:
        ValueError: the volume is not ``(C, X, Y, Z)``, or the network's output does not have ``K + 1``
            channels for the model's ``K`` labels.
    """
    if volume.ndim != 4:
        raise ValueError(f"expected a (C, X, Y, Z) volume; got shape {tuple(volume.shape)}")
    t0 = time.perf_counter()
    if not isinstance(volume, MetaTensor):
        volume = MetaTensor(volume)
    src_aff = np.asarray(volume.affine, dtype=np.float64)
    shape = tuple(int(s) for s in volume.shape[1:])
    space = model.model_space()
    inferer = model.make_inferer(progress=progress, **inferer_options)
    if space.slab_compatible(src_aff):
        path = "slab"
        res: SlabResult = inferer(volume, model.predictor, space, keep_probability)
        label_t, prob_t = res.label, res.probability
    else:
        path = "whole-volume"
        resampled = space.resample(space.orient(volume))
        sub = ModelSpace(pixdim=None, axcodes=None, intensity=space.intensity)
        res = inferer(resampled, model.predictor, sub, keep_probability)
        label_t = _nearest_onto(res.label, resampled.affine, src_aff, shape)
        prob_t = None if res.probability is None else _nearest_onto(res.probability, resampled.affine, src_aff, shape)
        del resampled
    if res.num_classes != model.num_classes + 1:
        raise ValueError(f"the network returns {res.num_classes} channels but the model has "
                         f"{model.num_classes} labels (+ background)")
    counts = res.voxel_count
    confidence = {
        model.labels[c]: (float(res.confidence_sum[c] / counts[c]) if counts[c] else None) for c in model.labels
    }
    label_np = label_t[0].numpy()
    notes: list[str] = []
    if postprocess and any(model.postprocessing.values()):
        label_np, notes = postprocess_label(
            label_np, voxel_volume_mm3=abs(float(np.linalg.det(src_aff[:3, :3]))), **model.postprocessing
        )
    meta = _label_meta(volume, model.labels)
    meta[PROBLEMS].extend(notes)
    mask = make_volume(label_np[None], src_aff, **meta)
    prob = None
    if prob_t is not None:
        prob = make_volume(prob_t, src_aff, **_label_meta(volume, model.labels))
    recount = bool(notes) or path != "slab"  # the inferer counted on the source grid, before post-processing
    per_label = _label_counts(label_np, model.num_classes + 1) if recount else np.asarray(res.voxel_count)
    voxels = {name: int(per_label[c]) for c, name in model.labels.items()}
    extras = {"probability": prob, "confidence": confidence, "voxels": voxels, "path": path,
              "plan": None if res.plan is None else res.plan.describe(),
              "seconds": time.perf_counter() - t0, "notes": notes, "slices": shape[2]}
    log.info("segmented %d slices in %.1f s (%s path)", shape[2], extras["seconds"], path)
    return mask, extras
