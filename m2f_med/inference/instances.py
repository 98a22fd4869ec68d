"""3D instances (lesions) from per-slice Mask2Former query outputs, and their table.

Three steps, each a function:

1. :func:`slice_segments`: per slice, the panoptic inference of MaskFormer / Mask2Former (Cheng et al.,
   NeurIPS 2021 Sec. 3.4 and CVPR 2022 Sec. 4; detectron2 ``panoptic_inference``). A query is kept when its
   most probable class is not "no object" and that class probability is ≥ ``score_threshold``; every pixel
   goes to the kept query with the highest ``class probability × mask probability``; a query keeps its
   pixels only where its own mask probability is ≥ ``mask_threshold`` and only if at least
   ``overlap_threshold`` of its own mask survived that competition. Queries of a "thing" class (a lesion)
   become one segment each; queries of a "stuff" class (an organ) are merged per class. A segment's score is
   its class probability × its mean mask probability inside the segment (Mask2Former's instance score).
2. :func:`link_segments`, **the linking rule**: slices are visited in order ``z = 0 .. Z-1``. A thing segment
   on slice ``z`` joins the 3D instance of the same class whose mask on the nearest earlier slice it
   overlaps most (instances last seen at ``z - 1 - max_gap`` or later), when the overlap is at least
   ``link_overlap`` of the smaller of the two 2D masks; otherwise it starts a new instance. Several segments
   may join one instance (a lesion that splits towards its pole), but two instances never merge, so two
   lesions that touch but whose masks never overlap on adjacent slices stay two. The instance score is the
   area-weighted mean of its segments' scores (in ``[0, 1]``). Instances below ``min_voxels`` or
   ``instance_score_threshold`` are dropped, and the rest numbered ``1..N`` by decreasing score.
3. :func:`instance_table`: per instance, on the source grid: class, score, voxels, volume (mL), mean
   intensity (HU for CT), centroid (LPS, mm) and bounding box (voxel indices and LPS mm).

:func:`predict_instances` runs all three on a volume with a bundle model (whole slices in model space,
mapped back to the source grid by nearest neighbour). Networks without queries (a MONAI UNet) get the
baseline rule instead: each 3D connected component of a thing class is one instance, scored by its mean
probability.

The output is panoptic (COCO panoptic's ``segments_info`` idea): the **semantic** label map holds every class
(stuff and things, ids of the model's ``labels``); the **instance** map holds ``1..N`` on thing voxels only;
the table gives each instance id its class. An organ + lesion model fits without a format change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from m2f_med.io.atomic import atomic_write

__all__ = [
    "INSTANCES_FORMAT",
    "InstanceSettings",
    "Instances",
    "SliceSegments",
    "instance_table",
    "link_segments",
    "predict_instances",
    "read_instances_json",
    "slice_segments",
    "write_instances_json",
]

INSTANCES_FORMAT = "m2f-med-instances/1"


@dataclass(frozen=True)
class InstanceSettings:
    """Settings of instance inference (bundle key ``instance_inference``); see the module docstring.

    Args:
        score_threshold: minimum class probability of a kept query, in ``[0, 1]``.
        mask_threshold: mask probability above which a pixel belongs to a query's mask.
        overlap_threshold: fraction of a query's own mask that must survive the per-pixel competition.
        link_overlap: minimum overlap (fraction of the smaller 2D mask) linking segments across slices.
        max_gap: slices an instance may be missing and still be continued.
        min_voxels: instances with fewer voxels (model grid) are dropped.
        instance_score_threshold: instances with a lower (aggregated) score are dropped.
        low_score: instances scoring below this are flagged ``low_confidence`` in the table (not dropped).
    """

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8
    link_overlap: float = 0.3
    max_gap: int = 0
    min_voxels: int = 10
    instance_score_threshold: float = 0.0
    low_score: float = 0.7

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | None) -> InstanceSettings:
        """Build from a bundle mapping; unknown keys raise ``ValueError`` naming them."""
        spec = dict(spec or {})
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown instance_inference keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**spec)


@dataclass
class SliceSegments:
    """Panoptic segments of one slice.

    Attributes:
        segment_map: ``(H, W)`` int32, 0 = no segment, ``i`` = segment ``i`` (1-based).
        labels: ``(n,)`` label values ``1..K`` of the segments.
        scores: ``(n,)`` scores in ``[0, 1]``.
        is_thing: ``(n,)`` bool, whether the segment's class is an instance class.
    """

    segment_map: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    is_thing: np.ndarray

    def semantic(self) -> np.ndarray:
        """``(H, W)`` uint8 label map of the slice (segment → its label value)."""
        lut = np.concatenate([[0], self.labels]).astype(np.uint8)
        return lut[self.segment_map]


def slice_segments(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    size: Sequence[int],
    thing_classes: Iterable[int],
    settings: InstanceSettings = InstanceSettings(),
) -> SliceSegments:
    """Panoptic segments of one slice from its query outputs (step 1 of the module docstring).

    Args:
        class_logits: ``(Q, K + 1)`` class logits (last column "no object").
        mask_logits: ``(Q, h, w)`` mask logits at 1/4 resolution.
        size: ``(H, W)`` of the slice in pixels.
        thing_classes: label values (``1..K``) that are instances.
        settings: thresholds.

    Returns:
        :class:`SliceSegments`, segments ordered by decreasing query score.

    Raises:
        ValueError: shapes of class and mask logits disagree.
    """
    from m2f_med.networks.postprocess import upsample_mask_logits

    if class_logits.ndim != 2 or mask_logits.ndim != 3 or class_logits.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"expected (Q, K + 1) and (Q, h, w) logits; got {tuple(class_logits.shape)}, "
                         f"{tuple(mask_logits.shape)}")
    height, width = int(size[0]), int(size[1])
    num_classes = class_logits.shape[1] - 1
    probs = class_logits.float().softmax(-1)
    best, best_label = probs.max(-1)
    keep = (best_label < num_classes) & (best >= settings.score_threshold)
    empty = SliceSegments(np.zeros((height, width), np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros(0, bool))
    if not bool(keep.any()):
        return empty
    idx = torch.nonzero(keep).flatten()
    idx = idx[best[idx].argsort(descending=True)]
    scores, labels = best[idx], best_label[idx] + 1
    mask_probs = upsample_mask_logits(mask_logits[idx][None].float(), (height, width))[0].sigmoid()
    owner = (scores[:, None, None] * mask_probs).argmax(0)
    things = {int(c) for c in thing_classes}
    segment_map = np.zeros((height, width), np.int32)
    out_labels: list[int] = []
    out_scores: list[float] = []
    stuff_index: dict[int, int] = {}
    for j in range(idx.numel()):
        own = mask_probs[j] >= settings.mask_threshold
        original = int(own.sum())
        seg = own & (owner == j)
        area = int(seg.sum())
        if original == 0 or area == 0 or area / original < settings.overlap_threshold:
            continue
        label = int(labels[j])
        score = float(scores[j] * mask_probs[j][seg].mean())
        seg_np = seg.cpu().numpy()
        if label not in things and label in stuff_index:
            segment_map[seg_np] = stuff_index[label]
            continue
        out_labels.append(label)
        out_scores.append(score)
        segment_map[seg_np] = len(out_labels)
        if label not in things:
            stuff_index[label] = len(out_labels)
    if not out_labels:
        return empty
    lab = np.asarray(out_labels, np.int64)
    return SliceSegments(segment_map, lab, np.asarray(out_scores, np.float32),
                         np.asarray([v in things for v in out_labels], bool))


@dataclass
class Instances:
    """3D instances on one grid.

    Attributes:
        instance_map: ``(X, Y, Z)`` int32, 0 = background, ``1..N`` = instance ids (thing voxels only).
        semantic: ``(X, Y, Z)`` uint8 label map of every class (stuff and things).
        labels: ``{instance id: label value}``.
        scores: ``{instance id: score in [0, 1]}``.
    """

    instance_map: np.ndarray
    semantic: np.ndarray
    labels: dict[int, int] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def link_segments(slices: Sequence[SliceSegments], settings: InstanceSettings = InstanceSettings()) -> Instances:
    """Link per-slice segments into 3D instances (the linking rule of the module docstring, step 2).

    Args:
        slices: ``Z`` :class:`SliceSegments`, one per axial slice in order, all ``(H, W)``.
        settings: ``link_overlap``, ``max_gap``, ``min_voxels``, ``instance_score_threshold``.

    Returns:
        :class:`Instances` on the ``(H, W, Z)`` grid, ids ``1..N`` by decreasing score.

    Raises:
        ValueError: no slices, or slices of different sizes.
    """
    if not slices:
        raise ValueError("no slices to link")
    shape2d = slices[0].segment_map.shape
    if any(s.segment_map.shape != shape2d for s in slices):
        raise ValueError("all slices must have the same size")
    depth = len(slices)
    raw = np.zeros((*shape2d, depth), np.int32)
    semantic = np.zeros((*shape2d, depth), np.uint8)
    label_of: list[int] = [0]
    weighted: list[float] = [0.0]
    area_of: list[int] = [0]
    last_seen: list[int] = [-1]
    last_mask: list[np.ndarray | None] = [None]
    for z, seg in enumerate(slices):
        semantic[..., z] = seg.semantic()
        for i in range(len(seg.labels)):
            if not seg.is_thing[i]:
                continue
            mask = seg.segment_map == i + 1
            area = int(mask.sum())
            best, best_overlap = 0, 0.0
            for inst in range(1, len(label_of)):
                seen = last_seen[inst]
                if (label_of[inst] != seg.labels[i] or last_mask[inst] is None or seen >= z
                        or seen < z - 1 - settings.max_gap):
                    continue  # other class, ended too long ago, or started on this slice
                prev = last_mask[inst]
                inter = int(np.logical_and(prev, mask).sum())
                if not inter:
                    continue
                frac = inter / max(1, min(area, int(prev.sum())))
                if frac >= settings.link_overlap and frac > best_overlap:
                    best, best_overlap = inst, frac
            if best == 0:
                label_of.append(int(seg.labels[i]))
                weighted.append(0.0)
                area_of.append(0)
                last_seen.append(-1)
                last_mask.append(None)
                best = len(label_of) - 1
            raw[..., z][mask] = best
            weighted[best] += float(seg.scores[i]) * area
            area_of[best] += area
        # an instance's mask on this slice (the union of the segments that joined it) is its "previous" mask
        for inst in np.unique(raw[..., z]):
            if inst:
                last_mask[inst] = raw[..., z] == inst
                last_seen[inst] = z
    kept = []
    for inst in range(1, len(label_of)):
        score = weighted[inst] / max(1, area_of[inst])
        if area_of[inst] >= settings.min_voxels and score >= settings.instance_score_threshold:
            kept.append((score, inst))
    kept.sort(key=lambda t: (-t[0], t[1]))
    lut = np.zeros(len(label_of), np.int32)
    out = Instances(np.zeros_like(raw), semantic)
    for new, (score, inst) in enumerate(kept, start=1):
        lut[inst] = new
        out.labels[new] = label_of[inst]
        out.scores[new] = float(min(1.0, max(0.0, score)))
    out.instance_map = lut[raw]
    dropped = (raw > 0) & (out.instance_map == 0)
    semantic[dropped] = 0
    return out


def components_as_instances(semantic: np.ndarray, probability: np.ndarray | None, thing_classes: Iterable[int],
                            min_voxels: int = 10, min_score: float = 0.0) -> Instances:
    """The baseline rule: each 3D connected component (26-connectivity) of a thing class is one instance.

    Args:
        semantic: ``(X, Y, Z)`` integer label map.
        probability: ``(X, Y, Z)`` float probability of the predicted class in ``[0, 1]`` (score = its mean
            over the component), or ``None`` (score 1).
        thing_classes: label values that are instances.
        min_voxels: smaller components are dropped (removed from the semantic map too).
        min_score: components scoring lower are dropped the same way (``instance_score_threshold``, so that
            the setting means the same for query linking and for this rule).

    Returns:
        :class:`Instances` on the same grid, ids by decreasing score.
    """
    sem = np.asarray(semantic).astype(np.uint8).copy()
    raw = np.zeros(sem.shape, np.int32)
    found: list[tuple[float, int, int]] = []
    structure = ndimage.generate_binary_structure(3, 3)
    n_total = 0
    for c in sorted({int(v) for v in thing_classes}):
        comp, n = ndimage.label(sem == c, structure=structure)
        for i, sl in enumerate(ndimage.find_objects(comp), start=1):
            region = comp[sl] == i
            big = int(region.sum()) >= min_voxels
            score = 1.0 if probability is None or not big else float(np.asarray(probability)[sl][region].mean())
            if not big or score < min_score:
                sem[sl][region] = 0
                continue
            n_total += 1
            raw[sl][region] = n_total
            found.append((score, n_total, c))
    found.sort(key=lambda t: (-t[0], t[1]))
    lut = np.zeros(n_total + 1, np.int32)
    out = Instances(np.zeros_like(raw), sem)
    for new, (score, old, c) in enumerate(found, start=1):
        lut[old] = new
        out.labels[new] = c
        out.scores[new] = float(min(1.0, max(0.0, score)))
    out.instance_map = lut[raw]
    return out


# ---------------------------------------------------------------------------------------------- volumes
def _model_volume(volume: MetaTensor, model) -> MetaTensor:
    from m2f_med.inference.preprocessing import intensity_transform

    space = model.model_space()
    moved = space.resample(space.orient(volume))
    mapped = intensity_transform(space.intensity, moved)(moved)
    return mapped if isinstance(mapped, MetaTensor) else MetaTensor(mapped, affine=moved.affine)


@torch.no_grad()
def predict_instances(
    volume: MetaTensor,
    model,
    settings: InstanceSettings | None = None,
    batch_size: int = 8,
    callback: Callable[[int, int], None] | None = None,
) -> tuple[Instances, dict[str, Any]]:
    """Instances of a volume with a bundle model, on the volume's own grid.

    Args:
        volume: ``(C, X, Y, Z)`` MetaTensor (RAS affine, mm), never modified.
        model: a :class:`~m2f_med.inference.bundle_model.BundleModel` with ``thing_classes``.
        settings: instance settings; ``None`` = the model's ``instance_settings``.
        batch_size: slices per forward pass (whole slices in model space).
        callback: ``callback(done, total)`` after each batch (may raise to cancel).

    Returns:
        ``(instances, extras)``: :class:`Instances` on the source grid (nearest-neighbour from the model grid)
        and ``extras`` with ``rule`` (``"query-linking"`` or ``"connected-components"``) and ``model_grid``
        (shape in model space).

    Raises:
        ValueError: the volume is not ``(C, X, Y, Z)``.
    """
    from m2f_med.inference.volume import _nearest_onto
    from m2f_med.networks import Mask2FormerNet
    from m2f_med.transforms.slice_stack import slice_stack_indices, take_slices

    if volume.ndim != 4:
        raise ValueError(f"expected a (C, X, Y, Z) volume; got shape {tuple(volume.shape)}")
    settings = settings or getattr(model, "instance_settings", None) or InstanceSettings()
    things = tuple(getattr(model, "thing_classes", ()) or ())
    vol = _model_volume(volume, model)
    data = vol.as_tensor().float().to(model.device)
    channels, height, width, depth = data.shape
    k = int(model.num_context_slices)
    net = model.network
    is_m2f = isinstance(net, Mask2FormerNet)
    seg_slices: list[SliceSegments] = []
    sem_prob = np.zeros((height, width, depth), np.float32)
    sem_label = np.zeros((height, width, depth), np.uint8)
    for z0 in range(0, depth, batch_size):
        zs = np.arange(z0, min(depth, z0 + batch_size))
        idx = slice_stack_indices(zs, k, depth)
        # (C, H, W, n, 2k+1) -> (n, C * (2k+1), H, W), channel order modality-major as SliceStack
        x = torch.stack([take_slices(data, row).permute(0, 3, 1, 2).reshape(-1, height, width) for row in idx])
        if is_m2f:
            out = net(x)
            for b in range(len(zs)):
                seg_slices.append(slice_segments(out.class_logits[b], out.mask_logits[b], (height, width),
                                                 things, settings))
        else:
            # a UNet needs sides divisible by its total stride: zero-pad (as the sliding-window inferer does)
            pad_h, pad_w = -height % 32, -width % 32
            probs = model.predictor(torch.nn.functional.pad(x, (0, pad_w, 0, pad_h)))[..., :height, :width]
            if model.activation == "softmax":
                probs = probs.softmax(1)
            p, lab = probs.max(1)
            sem_label[..., zs] = lab.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
            sem_prob[..., zs] = p.permute(1, 2, 0).cpu().numpy()
        if callback is not None:
            callback(int(zs[-1]) + 1, depth)
    if is_m2f:
        inst = link_segments(seg_slices, settings)
        rule = "query-linking"
    else:
        inst = components_as_instances(sem_label, sem_prob, things, settings.min_voxels,
                                       settings.instance_score_threshold)
        rule = "connected-components"
    src_aff = np.asarray(volume.affine, dtype=np.float64)
    shape = tuple(int(s) for s in volume.shape[1:])
    if tuple(vol.shape[1:]) != shape or not np.allclose(np.asarray(vol.affine, np.float64), src_aff, atol=1e-6):
        # ids up to 65535 survive the float32 nearest-neighbour resampling exactly
        im = _nearest_ids(inst.instance_map, vol.affine, src_aff, shape)
        sm = _nearest_onto(torch.from_numpy(inst.semantic[None]), vol.affine, src_aff, shape)[0].numpy()
        present = set(np.unique(im).tolist()) - {0}
        inst = Instances(im, sm, {i: c for i, c in inst.labels.items() if i in present},
                         {i: s for i, s in inst.scores.items() if i in present})
        inst = _renumber(inst)
    return inst, {"rule": rule, "model_grid": [int(height), int(width), int(depth)]}


def _nearest_ids(ids: np.ndarray, src_affine, dst_affine: np.ndarray, shape) -> np.ndarray:
    from monai.transforms import SpatialResample

    img = MetaTensor(torch.from_numpy(ids[None].astype(np.float32)), affine=torch.as_tensor(np.asarray(src_affine), dtype=torch.float64))
    out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
        img, dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64), spatial_size=tuple(int(s) for s in shape))
    return torch.as_tensor(out)[0].round().numpy().astype(np.int32)


def _renumber(inst: Instances) -> Instances:
    """Ids ``1..N`` by decreasing score again (resampling can drop a tiny instance)."""
    order = sorted(inst.labels, key=lambda i: (-inst.scores[i], i))
    lut = np.zeros(int(inst.instance_map.max(initial=0)) + 1, np.int32)
    out = Instances(inst.instance_map, inst.semantic)
    for new, old in enumerate(order, start=1):
        lut[old] = new
        out.labels[new] = inst.labels[old]
        out.scores[new] = inst.scores[old]
    out.instance_map = lut[inst.instance_map]
    return out


# ---------------------------------------------------------------------------------------------- the table
def instance_table(
    instances: Instances,
    image: MetaTensor,
    label_names: Mapping[int, str],
    low_score: float = 0.7,
) -> list[dict[str, Any]]:
    """One row per instance (step 3 of the module docstring), in id order.

    Args:
        instances: :class:`Instances` on the image's grid.
        image: ``(C, X, Y, Z)`` MetaTensor with RAS affine (mm); channel 0 gives the mean intensity (HU for CT).
        label_names: ``{label value: class name}``.
        low_score: rows with ``score < low_score`` get ``low_confidence: true``.

    Returns:
        Rows with ``id``, ``label``, ``class_name``, ``score``, ``low_confidence``, ``voxels``, ``volume_ml``,
        ``mean_intensity`` (HU for CT), ``centroid_lps_mm`` ``[x, y, z]``, ``bbox_voxels``
        ``{"min": [i, j, k], "max": [i, j, k]}`` (inclusive indices on the image grid) and
        ``bbox_lps_mm`` ``{"min", "max"}`` (the box's corner voxel centres in LPS, sorted per axis).

    Raises:
        ValueError: the instance map and the image grid differ in shape.
    """
    ids = instances.instance_map
    if tuple(ids.shape) != tuple(image.shape[1:]):
        raise ValueError(f"instance map {ids.shape} and image {tuple(image.shape[1:])} are not on one grid")
    affine = np.asarray(image.affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    img = np.asarray(image[0].detach().cpu().numpy() if isinstance(image, torch.Tensor) else image[0])
    rows = []
    objects = ndimage.find_objects(ids)
    for i in sorted(instances.labels):
        if i > len(objects) or objects[i - 1] is None:
            continue
        sl = objects[i - 1]
        region = ids[sl] == i
        coords = np.argwhere(region) + np.array([s.start for s in sl])
        centre = coords.mean(0)
        lps = ras_to_lps @ (affine[:3, :3] @ centre + affine[:3, 3])
        lo, hi = coords.min(0), coords.max(0)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
        corners_lps = (ras_to_lps @ (affine[:3, :3] @ corners.T + affine[:3, 3:4])).T
        score = float(instances.scores.get(i, 0.0))
        label = int(instances.labels[i])
        rows.append({
            "id": int(i),
            "label": label,
            "class_name": str(label_names.get(label, f"class_{label}")),
            "score": round(score, 4),
            "low_confidence": bool(score < low_score),
            "voxels": int(region.sum()),
            "volume_ml": round(float(region.sum()) * voxel_ml, 3),
            "mean_intensity": round(float(img[sl][region].mean()), 2),
            "centroid_lps_mm": [round(float(v), 2) for v in lps],
            "bbox_voxels": {"min": [int(v) for v in lo], "max": [int(v) for v in hi]},
            "bbox_lps_mm": {"min": [round(float(v), 2) for v in corners_lps.min(0)],
                            "max": [round(float(v), 2) for v in corners_lps.max(0)]},
        })
    return rows


def write_instances_json(
    path: str | os.PathLike,
    rows: list[dict[str, Any]],
    label_names: Mapping[int, str],
    thing_classes: Iterable[int],
    **extra: Any,
) -> Path:
    """Write ``instances.json`` atomically: ``{"format", "labels", "thing_classes", "instances": rows, ...}``.

    ``labels`` names every class of the semantic mask, ``thing_classes`` those with instances, and
    ``instances`` the rows of :func:`instance_table`; ``extra`` keys (``note``, ``rule``, file names) are added.
    """
    doc = {
        "format": INSTANCES_FORMAT,
        "labels": {str(k): str(v) for k, v in sorted(label_names.items())},
        "thing_classes": sorted(int(v) for v in thing_classes),
        "instances": rows,
        **extra,
    }
    path = Path(path)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def read_instances_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``instances.json``.

    Raises:
        VolumeError: not JSON, or not of :data:`INSTANCES_FORMAT`.
    """
    from m2f_med.io.errors import VolumeError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise VolumeError(path, f"cannot read instances table: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != INSTANCES_FORMAT:
        raise VolumeError(path, f"not an m2f-med instances table (format {INSTANCES_FORMAT!r} expected)")
    return doc
