"""Label-driven contrast-enhancement augmentation for CT: per-structure random HU offsets.

Training CTs without contrast medium teach a network that blood and parenchyma sit near 40 HU; after an
iodinated contrast injection the aorta reads 150–300 HU and liver, spleen and kidneys gain 30–150 HU
(portal-venous / arterial phases). Global intensity augmentation (MONAI ``RandShiftIntensity``,
``RandHistogramShift``) cannot move one organ against its neighbours, so the network fails on
contrast-enhanced scans. This transform adds, per labelled structure, a random offset drawn from a
physiological range (in HU, converted to the model's window units) to the voxels of that structure, as in
the label-driven intensity synthesis of SynthSeg (Billot et al., Med. Image Anal. 2023), but restricted to
offsets so that the non-contrast texture is kept.

Ranges are textbook enhancement values, not measured on any evaluation scan.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["DEFAULT_ENHANCEMENT_HU", "RandOrganContrastd"]

# (low, high) HU added by contrast medium, portal-venous to arterial phase (e.g. Bae, Radiology 2010)
DEFAULT_ENHANCEMENT_HU: dict[str, tuple[float, float]] = {
    "aorta": (0.0, 260.0),
    "inferior_vena_cava": (0.0, 160.0),
    "portal_vein_and_splenic_vein": (0.0, 180.0),
    "kidney_right": (0.0, 180.0),
    "kidney_left": (0.0, 180.0),
    "spleen": (0.0, 100.0),
    "liver": (0.0, 70.0),
    "pancreas": (0.0, 80.0),
    "stomach": (0.0, 40.0),
    "gallbladder": (0.0, 10.0),
}


class RandOrganContrastd(RandomizableTransform, MapTransform):
    """Add a random per-structure offset (simulated contrast enhancement) to a windowed CT image.

    Works on the preprocessed image (after the CT window, values in ``[b_min, b_max]``) and its label map of
    the same spatial shape: image ``(C, X, Y[, Z])``, label ``(1, X, Y[, Z])`` with model ids ``1..K``.
    With probability ``prob`` one draw is made per call: each structure in ``enhancement_hu`` gets an
    offset ``u · U(low, high)`` HU with a shared phase factor ``u ~ U(0, 1)`` (weak to strong
    enhancement), converted to window units with ``hu_scale``; the result is clipped to ``clip_range``
    (the window's clipping). Every channel of the image is shifted (2.5D stacks share the centre label;
    call it before slice stacking to keep the neighbours exact). Inputs are not modified.

    Args:
        keys: the image key(s) to modify.
        label_key: key of the label map ``(1, X, Y[, Z])`` in model ids.
        labels: the model's ``{id: name}`` (e.g. the bundle's ``labels``); names select the ranges.
        hu_scale: window units per HU, ``(b_max - b_min) / (a_max - a_min)`` (1/400 for -160..240 HU → 0..1).
        enhancement_hu: ``{name: (low, high)}`` offsets in HU; default :data:`DEFAULT_ENHANCEMENT_HU`.
        prob: probability of applying the augmentation.
        clip_range: ``(min, max)`` of the windowed image, or ``None`` for no clipping.
        allow_missing_keys: MONAI ``MapTransform`` option.

    Raises:
        KeyError: ``label_key`` is missing from the data.
        ValueError: the label's spatial shape differs from the image's, or a range has ``low > high``.

    See Also:
        MONAI ``RandShiftIntensityd`` (global offset); Billot et al., "SynthSeg", Med. Image Anal. 86 (2023).
    """

    backend = [torch.Tensor.__name__, np.ndarray.__name__]

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        labels: Mapping[Any, str],
        hu_scale: float = 1.0 / 400.0,
        enhancement_hu: Mapping[str, tuple[float, float]] | None = None,
        prob: float = 0.5,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        ranges = dict(DEFAULT_ENHANCEMENT_HU if enhancement_hu is None else enhancement_hu)
        for name, (low, high) in ranges.items():
            if float(low) > float(high):
                raise ValueError(f"enhancement range of {name!r} has low > high: {(low, high)}")
        self.label_key = label_key
        self.hu_scale = float(hu_scale)
        self.clip_range = None if clip_range is None else (float(clip_range[0]), float(clip_range[1]))
        # (model id, low, high) for the structures the model knows
        self._ranges = [(int(i), float(ranges[n][0]), float(ranges[n][1])) for i, n in labels.items() if n in ranges]
        self._offsets: dict[int, float] = {}

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply and the per-structure offsets (window units)."""
        super().randomize(None)
        if not self._do_transform:
            return
        phase = self.R.uniform(0.0, 1.0)
        self._offsets = {i: phase * self.R.uniform(lo, hi) * self.hu_scale for i, lo, hi in self._ranges}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply to ``data[keys]`` using ``data[label_key]``; returns a new dict (inputs untouched)."""
        d = dict(data)
        self.randomize()
        if not self._do_transform or not self._ranges:
            return d
        if self.label_key not in d:
            raise KeyError(f"RandOrganContrastd: label key {self.label_key!r} is missing")
        label = torch.as_tensor(d[self.label_key])[0]
        for key in self.key_iterator(d):
            img = d[key]
            if tuple(img.shape[1:]) != tuple(label.shape):
                raise ValueError(
                    f"RandOrganContrastd: label shape {tuple(label.shape)} does not match image "
                    f"{key!r} spatial shape {tuple(img.shape[1:])}"
                )
            img_t = torch.as_tensor(img)
            offset = torch.zeros(label.shape, dtype=img_t.dtype, device=img_t.device)
            lab = label.to(img_t.device)
            for i, value in self._offsets.items():
                offset[lab == i] = value
            shift = offset.unsqueeze(0)
            out = img + (shift.cpu().numpy() if isinstance(img, np.ndarray) else shift)  # keeps the input type
            if self.clip_range is not None:
                out = out.clip(*self.clip_range) if isinstance(out, np.ndarray) else out.clamp(*self.clip_range)
            d[key] = out
        return d
