"""Label remapping: source label ids (e.g. TotalSegmentator's 117 classes) → the model's ids, others → 0.

MONAI's ``MapLabelValue`` keeps unlisted values and loops once per pair; for a label map with 100+ source
classes where only a few are kept we need "everything else is background" in one pass, so this is a
lookup table (LUT) applied with a single gather.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["RemapLabels", "RemapLabelsd", "mapping_from_names"]


def mapping_from_names(source_labels: Mapping[Any, str], target_labels: Mapping[Any, str]) -> dict[int, int]:
    """Build a source-id → target-id mapping by matching structure names.

    Args:
        source_labels: ``{id: name}`` of the label map on disk, e.g. TotalSegmentator's
            ``{"5": "liver", "1": "spleen", ...}`` (keys may be str or int).
        target_labels: ``{id: name}`` of the model, e.g. ``{"1": "liver", "2": "spleen"}``.

    Returns:
        ``{source_id: target_id}`` for every target name found in the source.

    Raises:
        ValueError: a target name is missing from ``source_labels`` (names are compared exactly,
            snake_case as in TotalSegmentator).
    """
    by_name = {str(name): int(i) for i, name in source_labels.items()}
    missing = [name for name in target_labels.values() if name not in by_name]
    if missing:
        raise ValueError(f"label names not found in the source label map: {missing}")
    return {by_name[str(name)]: int(i) for i, name in target_labels.items()}


class RemapLabels(Transform):
    """Map label ids through a dict; every id not in the dict becomes 0 (background).

    Args:
        mapping: ``{source_id: target_id}`` (keys/values int or numeric str, e.g. parsed from JSON);
            source ids must be ≥ 0, target ids in ``[0, 65535]``.
        dtype: output dtype; ``None`` keeps the input dtype (integer inputs) or gives ``torch.int64``.

    Raises:
        ValueError: negative source ids or out-of-range target ids (at construction); a label map with
            non-integer values (at call).

    Example:
        >>> RemapLabels({5: 1, 1: 2})(torch.tensor([[[[0, 1, 5, 7]]]])).tolist()
        [[[[0, 2, 1, 0]]]]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mapping: Mapping[Any, Any], dtype: torch.dtype | None = None) -> None:
        pairs = {int(k): int(v) for k, v in mapping.items()}
        if any(k < 0 for k in pairs):
            raise ValueError(f"source label ids must be >= 0; got {sorted(pairs)}")
        if any(not 0 <= v <= 65535 for v in pairs.values()):
            raise ValueError(f"target label ids must be in [0, 65535]; got {sorted(pairs.values())}")
        self.mapping = pairs
        size = max(pairs, default=0) + 1
        self._lut = torch.zeros(size, dtype=torch.int64)
        for k, v in pairs.items():
            self._lut[k] = v
        self.dtype = dtype

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Remap a label map of any shape (typically ``(1, X, Y, Z)``); the input is not modified.

        Returns:
            The same type (numpy / tensor / MetaTensor with its meta) and shape as ``img``.
        """
        is_np = isinstance(img, np.ndarray)
        t = torch.as_tensor(img) if is_np else img
        plain = t.as_tensor() if isinstance(t, MetaTensor) else t
        if plain.is_floating_point():
            if not torch.equal(plain, plain.round()):
                raise ValueError("RemapLabels expects integer label values; the label map has fractional values")
        ids = plain.to(torch.int64)
        lut = self._lut.to(ids.device)
        inside = (ids >= 0) & (ids < lut.numel())
        out = torch.where(inside, lut[ids.clamp(0, lut.numel() - 1)], torch.zeros_like(ids))
        dtype = self.dtype or (plain.dtype if not plain.is_floating_point() else torch.int64)
        if self.dtype is None and max(self.mapping.values(), default=0) > torch.iinfo(dtype).max:
            dtype = torch.int64  # the kept ids would overflow the input's dtype (e.g. uint8)
        out = out.to(dtype)
        if is_np:
            return out.numpy()
        if isinstance(t, MetaTensor):
            meta = {k: v for k, v in t.meta.items() if k != "affine"}
            return MetaTensor(out, affine=t.affine, meta=meta, applied_operations=list(t.applied_operations))
        return out


class RemapLabelsd(MapTransform):
    """Dictionary twin of :class:`RemapLabels`.

    Args:
        keys: label keys to remap.
        mapping: ``{source_id: target_id}``; unlisted ids become 0.
        dtype: output dtype (see :class:`RemapLabels`).
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mapping: Mapping[Any, Any],
        dtype: torch.dtype | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remap = RemapLabels(mapping, dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remap(d[key])
        return d
