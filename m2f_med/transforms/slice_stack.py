"""2.5D slice stacks: axial slices with their neighbours as channels, for 2D networks on 3D volumes.

Channel order of every stack (modality-major, then slice offset)::

    out[c * (2k + 1) + (j + k)] = volume[c, :, :, clamp(z + j, 0, Z - 1)]   for j = -k .. k

so with one input channel the channels are the slices ``z-k, ..., z, ..., z+k`` and the centre slice is
channel ``k``. At the ends of the volume the first/last slice is repeated (edge replication), so every slice,
the first and last included, gets a full stack of ``2k + 1`` channels.

The output keeps MONAI metadata: the 4×4 affine is shifted to the (first) returned slice, so voxel ``(i, j)``
of the output still maps to the right world position (mm), and ``meta["slice_index"]`` records the axial
index (or indices) the stack was centred on.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import TransformBackends, ensure_tuple_rep

__all__ = ["SLICE_INDEX", "SliceStack", "SliceStackd", "RandSliceStackd", "slice_stack_indices", "take_slices"]

SLICE_INDEX = "slice_index"

IndexLike = int | Sequence[int] | slice | None


def slice_stack_indices(centres: Sequence[int] | np.ndarray, num_context: int, depth: int) -> np.ndarray:
    """Source slice indices of the 2.5D stacks centred on ``centres`` (edge replication at both ends).

    Args:
        centres: axial indices ``z`` (each in ``[0, depth)``), shape ``(n,)``.
        num_context: ``k``, neighbours on each side.
        depth: number of slices ``Z`` of the volume.

    Returns:
        ``(n, 2k + 1)`` int64 array; row ``i`` holds ``clamp(z_i - k .. z_i + k, 0, Z - 1)``.

    Raises:
        ValueError: ``num_context`` is negative, ``depth`` < 1, or a centre lies outside ``[0, depth)``.
    """
    if num_context < 0:
        raise ValueError(f"num_context must be >= 0; got {num_context}")
    if depth < 1:
        raise ValueError(f"the volume has no slices (depth {depth})")
    c = np.asarray(centres, dtype=np.int64).reshape(-1)
    if c.size and (c.min() < 0 or c.max() >= depth):
        raise ValueError(f"slice index out of range [0, {depth}): {c.min()}..{c.max()}")
    offsets = np.arange(-num_context, num_context + 1, dtype=np.int64)
    return np.clip(c[:, None] + offsets[None, :], 0, depth - 1)


def take_slices(volume: torch.Tensor, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """``volume[..., indices]`` along the last (slice) axis, as a view when the indices are one ascending run.

    Gathering along the innermost axis is strided and slow; a contiguous run (the usual case inside a
    volume) is a slice view instead, and otherwise advanced indexing (about 3x faster than
    ``index_select`` on the last axis here).

    Args:
        volume: ``(..., Z)`` tensor.
        indices: slice indices in ``[0, Z)``, shape ``(n,)``.

    Returns:
        ``(..., n)`` tensor (a view for a contiguous run; callers must not write to it).
    """
    ix = np.asarray(indices, dtype=np.int64).reshape(-1)
    if ix.size and np.all(np.diff(ix) == 1):
        return volume[..., int(ix[0]) : int(ix[0]) + ix.size]
    return volume[..., torch.as_tensor(ix, device=volume.device)]


def _as_centres(index: IndexLike, depth: int) -> tuple[np.ndarray, bool]:
    """Normalise an index argument to an array of centres; the flag says whether a single slice was asked."""
    if index is None:
        return np.arange(depth), False
    if isinstance(index, slice):
        return np.arange(depth)[index], False
    if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
        z = int(index)
        return np.asarray([z + depth if z < 0 else z]), True
    return np.asarray([int(i) for i in index], dtype=np.int64), False


def _shifted_affine(affine: torch.Tensor, z: int) -> torch.Tensor:
    """The 4×4 affine of the sub-volume that starts at axial index ``z`` (translation moved by ``z`` steps)."""
    aff = torch.as_tensor(affine, dtype=torch.float64).clone()
    aff[:3, 3] = aff[:3, 3] + aff[:3, 2] * float(z)
    return aff


class SliceStack(Transform):
    """Build 2.5D inputs: each axial slice with ``k`` neighbours on each side stacked as channels.

    Follows the MONAI array-transform pattern (tensor in, tensor out; see ``monai.transforms.Orientation``).
    See the module docstring for the channel order and edge handling.

    Args:
        num_context: ``k`` ≥ 0, neighbours per side; ``k = 0`` returns plain slices.
        index: default axial index (or indices, or a ``slice``) to stack; ``None`` means all slices.

    Example:
        >>> SliceStack(num_context=1)(torch.zeros(1, 64, 64, 10), index=0).shape
        torch.Size([3, 64, 64])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, num_context: int = 1, index: IndexLike = None) -> None:
        if num_context < 0:
            raise ValueError(f"num_context must be >= 0; got {num_context}")
        self.num_context = int(num_context)
        self.index = index

    def __call__(self, img: torch.Tensor | np.ndarray, index: IndexLike = None) -> torch.Tensor:
        """Stack the slices.

        Args:
            img: ``(C, X, Y, Z)`` volume (MetaTensor, tensor or numpy array); never modified.
            index: overrides the constructor's ``index``: an ``int`` gives one stack, a sequence or ``slice``
                gives a slab; ``None`` (and no default) means every slice.

        Returns:
            ``(C * (2k + 1), X, Y)`` for one index, else ``(C * (2k + 1), X, Y, n)``. A MetaTensor input gives a
            MetaTensor whose affine starts at the first returned slice and whose ``meta["slice_index"]`` is the
            index (int) or the list of indices.

        Raises:
            ValueError: ``img`` is not 4-D, or an index is out of range.
        """
        t = torch.as_tensor(img) if isinstance(img, np.ndarray) else img
        if t.ndim != 4:
            raise ValueError(f"SliceStack expects a (C, X, Y, Z) volume; got shape {tuple(t.shape)}")
        depth = int(t.shape[-1])
        centres, single = _as_centres(self.index if index is None else index, depth)
        idx = slice_stack_indices(centres, self.num_context, depth)  # (n, 2k+1)
        n, width = idx.shape
        plain = t.as_tensor() if isinstance(t, MetaTensor) else t
        c, x, y = plain.shape[:3]
        # (C, 2k+1, X, Y, n) -> (C*(2k+1), X, Y, n): modality-major, then offset -k..k
        out = torch.stack([take_slices(plain, idx[:, j]) for j in range(width)], dim=1).reshape(c * width, x, y, n)
        if single:
            out = out[..., 0]
        out = out.contiguous()
        if not isinstance(img, MetaTensor):
            return out
        meta = copy.deepcopy({k: v for k, v in img.meta.items() if k != "affine"})
        meta[SLICE_INDEX] = int(centres[0]) if single else [int(z) for z in centres]
        meta["spatial_shape"] = np.asarray(out.shape[1:])
        first = int(centres[0]) if len(centres) else 0
        return MetaTensor(out, affine=_shifted_affine(img.affine, first), meta=meta)


class SliceStackd(MapTransform):
    """Dictionary twin of :class:`SliceStack` (MONAI ``MapTransform`` over ``keys``).

    Args:
        keys: keys of the ``(C, X, Y, Z)`` volumes to stack.
        num_context: ``k`` per key (one int for all, or a sequence matching ``keys``). Give labels ``0``
            so they become their centre slice only, e.g. ``SliceStackd(["image", "label"], [2, 0])``.
        index: axial index / indices / ``slice`` to stack; ``None`` means all slices. A per-call value can be
            put in the data under ``index_key``.
        index_key: optional data key holding the index for this sample (overrides ``index``).
        allow_missing_keys: don't raise if a key is missing.

    Returns (from ``__call__``):
        A new dict; the listed keys hold the stacks (shapes as :class:`SliceStack`), other keys are shared.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_context: int | Sequence[int] = 1,
        index: IndexLike = None,
        index_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stackers = [SliceStack(k, index) for k in ensure_tuple_rep(num_context, len(self.keys))]
        self.index_key = index_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        index = d.get(self.index_key) if self.index_key else None
        for key, stacker in self.key_iterator(d, self.stackers):
            d[key] = stacker(d[key], index=index)
        return d


class RandSliceStackd(Randomizable, MapTransform, MultiSampleTrait):
    """Sample random axial slices for 2.5D training, weighted towards slices that contain foreground.

    Like MONAI's ``RandCropByPosNegLabeld``, each sample is a foreground slice with probability
    ``pos / (pos + neg)`` and a background slice otherwise (a slice is foreground if any label voxel in it is
    ``> 0``). If the volume has no foreground (or no background) slice, the other kind is used.

    Args:
        keys: keys to cut; each gets its own ``num_context`` (default: ``k`` for all keys except
            ``label_key``, which gets ``0``).
        label_key: key of the ``(1, X, Y, Z)`` label map used for the weighting.
        num_context: ``k`` for image keys (int), or one value per key.
        pos: weight of foreground slices (≥ 0).
        neg: weight of background slices (≥ 0); ``pos + neg`` must be > 0.
        num_samples: number of 2D samples returned per input.
        allow_missing_keys: don't raise if a key is missing.

    Returns (from ``__call__``):
        A list of ``num_samples`` dicts; image keys hold ``(C * (2k + 1), X, Y)`` and the label
        ``(1, X, Y)`` (the centre slice), all MetaTensors with the affine of that slice and
        ``meta["slice_index"]``; keys not listed are deep-copied into each sample.

    Raises:
        ValueError: bad weights, or ``label_key`` missing from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        num_context: int | Sequence[int] = 1,
        pos: float = 1.0,
        neg: float = 1.0,
        num_samples: int = 1,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ValueError(f"pos and neg must be >= 0 with a positive sum; got pos={pos}, neg={neg}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        self.label_key = label_key
        if isinstance(num_context, int):
            ks = [0 if key == label_key else num_context for key in self.keys]
        else:
            ks = list(ensure_tuple_rep(num_context, len(self.keys)))
        self.stackers = [SliceStack(k) for k in ks]
        self.pos_ratio = pos / (pos + neg)
        self.num_samples = int(num_samples)
        self._centres: list[int] = []

    def randomize(self, label: torch.Tensor) -> None:
        """Draw ``num_samples`` axial indices from ``label`` ``(C, X, Y, Z)``."""
        lab = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
        fg_mask = (lab > 0).reshape(-1, lab.shape[-1]).any(dim=0).cpu().numpy()
        fg = np.flatnonzero(fg_mask)
        bg = np.flatnonzero(~fg_mask)
        self._centres = []
        for _ in range(self.num_samples):
            use_fg = self.R.rand() < self.pos_ratio
            pool = fg if (use_fg and fg.size) or not bg.size else bg
            self._centres.append(int(pool[self.R.randint(pool.size)]))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        if self.label_key not in d:
            raise ValueError(f"RandSliceStackd needs the label under {self.label_key!r}; keys are {list(d)}")
        self.randomize(d[self.label_key])
        listed = set(self.key_iterator(d))
        out: list[dict[Hashable, Any]] = []
        for z in self._centres:
            sample = {key: copy.deepcopy(val) for key, val in d.items() if key not in listed}
            for key, stacker in self.key_iterator(d, self.stackers):
                sample[key] = stacker(d[key], index=z)
            out.append(sample)
        return out
