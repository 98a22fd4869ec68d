"""The model's input space and the way back: orientation, in-plane spacing and intensity, slab by slab.

A model is trained on volumes in one orientation (``axcodes``, RAS by default), resampled to one spacing
(``pixdim``, mm) and with one intensity mapping (``intensity``). :class:`ModelSpace` applies the same MONAI
transforms at inference (``Orientation``, ``Spacing``, ``ScaleIntensityRange``) and maps the network's
probabilities back onto the source grid with ``SpatialResample`` (bilinear on probabilities, then argmax),
so the mask matches the input voxel for voxel and carries its affine.

When the slice axis of the source stays the slice axis in the model space and the spacing along it is kept
(``pixdim[2] <= 0``), this works on slabs of slices: memory then does not grow with the number of slices
beyond the volume and the mask (:meth:`ModelSpace.slab_compatible`). Otherwise the caller resamples the
whole volume first (see ``m2f_med.inference.volume``).

Intensity specification (the bundle's ``intensity`` key, see ``docs/bundle_contract.md``):

* ``{"a_min": -200, "a_max": 300, "b_min": 0, "b_max": 1, "clip": true}``: CT window in HU → MONAI
  ``ScaleIntensityRange`` (``mode`` may be given as ``"range"``);
* ``{"mode": "percentile", "lower": 0.5, "upper": 99.5, "b_min": 0, "b_max": 1, "clip": true}``: MR
  percentile normalisation → MONAI ``ScaleIntensityRangePercentiles`` semantics, with the percentiles taken
  once over the whole source volume;
* ``None`` / ``{}``: intensities unchanged;
* a list of such specs, one per image channel (multi-modal input, e.g. ``[CT window, PET percentile]`` for
  a datalist ``image`` that lists a CT and a PET volume): channel ``i`` gets spec ``i``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Orientation,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacing,
    SpatialResample,
)
from monai.transforms.utils_pytorch_numpy_unification import percentile

from m2f_med.io.volume import orientation_code, spacing_from_affine

__all__ = ["ModelSpace", "intensity_transform", "intensity_transformd", "parse_intensity"]

_SPACING_RTOL = 1e-4


def parse_intensity(spec: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Validate an intensity spec and fill defaults.

    Args:
        spec: see the module docstring.

    Returns:
        A dict with ``mode`` (``"none"``, ``"range"``, ``"percentile"`` or ``"per_channel"`` with ``specs``,
        one parsed spec per channel) and the filled parameters.

    Raises:
        ValueError: unknown mode, missing ``a_min``/``a_max``, or ``a_min >= a_max`` / ``lower >= upper``.
    """
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        specs = [parse_intensity(one) for one in spec]
        if not specs:
            raise ValueError("a per-channel intensity list needs one spec per image channel; got []")
        return {"mode": "per_channel", "specs": specs}
    if not spec:
        return {"mode": "none"}
    s = dict(spec)
    mode = str(s.pop("mode", "range")).lower()
    out: dict[str, Any] = {"mode": mode, "b_min": float(s.pop("b_min", 0.0)), "b_max": float(s.pop("b_max", 1.0)),
                           "clip": bool(s.pop("clip", True))}
    if mode == "range":
        if "a_min" not in s or "a_max" not in s:
            raise ValueError(f"intensity range needs a_min and a_max; got {dict(spec)}")
        out["a_min"], out["a_max"] = float(s.pop("a_min")), float(s.pop("a_max"))
        if out["a_min"] >= out["a_max"]:
            raise ValueError(f"intensity a_min must be < a_max; got {out['a_min']} >= {out['a_max']}")
    elif mode == "percentile":
        out["lower"], out["upper"] = float(s.pop("lower", 0.5)), float(s.pop("upper", 99.5))
        if not 0 <= out["lower"] < out["upper"] <= 100:
            raise ValueError(f"intensity percentiles must satisfy 0 <= lower < upper <= 100; got {dict(spec)}")
    else:
        raise ValueError(f"unknown intensity mode {mode!r}; use 'range' or 'percentile'")
    if s:
        raise ValueError(f"unknown intensity keys {sorted(s)}")
    return out


def intensity_transformd(keys: Sequence[str] | str, spec: Mapping[str, Any] | None) -> Callable:
    """The MONAI dictionary transform for an intensity spec (for training / bundle pipelines).

    Args:
        keys: image keys.
        spec: see the module docstring.

    Returns:
        ``ScaleIntensityRanged`` (CT window), ``ScaleIntensityRangePercentilesd`` (MR) or an identity.

    Raises:
        ValueError: invalid spec (see :func:`parse_intensity`).
    """
    p = parse_intensity(spec)
    if p["mode"] == "per_channel":
        return _PerChannelIntensityd(keys, spec)
    if p["mode"] == "range":
        return ScaleIntensityRanged(keys, p["a_min"], p["a_max"], p["b_min"], p["b_max"], clip=p["clip"])
    if p["mode"] == "percentile":
        return ScaleIntensityRangePercentilesd(keys, p["lower"], p["upper"], p["b_min"], p["b_max"], clip=p["clip"])
    return lambda data: dict(data)


class _PerChannelIntensityd:
    """Dictionary transform: channel ``i`` of each key mapped with spec ``i`` (percentiles per volume)."""

    def __init__(self, keys: Sequence[str] | str, specs: Sequence[Mapping[str, Any]]):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.specs = list(specs)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.keys:
            img = d[key]
            mapped = intensity_transform(self.specs, img)(img)
            d[key] = mapped if isinstance(mapped, MetaTensor) or not isinstance(img, MetaTensor) else \
                MetaTensor(mapped, meta=img.meta)
        return d


def intensity_transform(spec: Mapping[str, Any] | None, volume: torch.Tensor | None = None) -> Callable:
    """A pointwise array transform for an intensity spec, fixed for one volume.

    For the percentile mode the percentiles are computed once over ``volume`` (all channels) — as MONAI's
    ``ScaleIntensityRangePercentiles`` would on that volume — so that slabs of it are all mapped alike.

    Args:
        spec: see the module docstring.
        volume: the source volume ``(C, X, Y, Z)``; required for the percentile mode.

    Returns:
        A callable tensor → tensor (``ScaleIntensityRange`` or identity).

    Raises:
        ValueError: invalid spec, or percentile mode without ``volume``.
    """
    p = parse_intensity(spec)
    if p["mode"] == "per_channel":
        specs = list(spec)
        if volume is None:
            raise ValueError("a per-channel intensity spec needs the volume (its channel count)")
        if int(volume.shape[0]) != len(specs):
            raise ValueError(f"{len(specs)} intensity specs for {int(volume.shape[0])} image channel(s)")
        per = [intensity_transform(one, volume[i : i + 1]) for i, one in enumerate(specs)]
        return lambda x: torch.cat([f(x[i : i + 1]) for i, f in enumerate(per)], 0)
    if p["mode"] == "none":
        return lambda x: x
    if p["mode"] == "percentile":
        if volume is None:
            raise ValueError("percentile intensity normalisation needs the volume to compute percentiles")
        v = volume.as_tensor() if isinstance(volume, MetaTensor) else torch.as_tensor(volume)
        arr = v.detach().cpu().numpy()
        a_min, a_max = (float(percentile(arr, q)) for q in (p["lower"], p["upper"]))
        if a_max <= a_min:  # a constant image: map it to b_min instead of dividing by zero
            a_max = a_min + 1.0
        return ScaleIntensityRange(a_min, a_max, p["b_min"], p["b_max"], clip=p["clip"])
    return ScaleIntensityRange(p["a_min"], p["a_max"], p["b_min"], p["b_max"], clip=p["clip"])


def _ornt_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """nibabel orientation transform (per source axis: target axis, flip) from ``affine`` to ``axcodes``."""
    src = nib.io_orientation(np.asarray(affine, dtype=np.float64))
    return nib.orientations.ornt_transform(src, nib.orientations.axcodes2ornt(axcodes))


@dataclass
class ModelSpace:
    """Orientation, spacing and intensity of a model's input, and the inverse mapping of its output.

    Args:
        pixdim: target spacing in mm along the three axes of the oriented volume; entries ``<= 0`` keep the
            source spacing (MONAI ``Spacing`` rule). ``None`` or a 2-sequence means in-plane only
            (``[sx, sy]`` → ``[sx, sy, -1]``).
        axcodes: orientation of the model's input (MONAI ``Orientation`` ``axcodes``), default ``"RAS"``;
            ``None`` keeps the source orientation.
        intensity: intensity spec (module docstring).

    See Also:
        MONAI ``Orientation``, ``Spacing``, ``SpatialResample``; ``docs/bundle_contract.md``.
    """

    pixdim: Sequence[float] | None = None
    axcodes: str | None = "RAS"
    intensity: Mapping[str, Any] | None = None
    _target: tuple[float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pd = [-1.0, -1.0, -1.0] if self.pixdim is None else [float(v) for v in self.pixdim]
        if len(pd) == 2:
            pd.append(-1.0)
        if len(pd) != 3:
            raise ValueError(f"pixdim must have 2 or 3 entries; got {self.pixdim}")
        if self.axcodes is not None and (len(self.axcodes) != 3 or set(self.axcodes.upper()) - set("RASLPI")):
            raise ValueError(f"axcodes must be three letters of R/L, A/P, S/I; got {self.axcodes!r}")
        self._target = (pd[0], pd[1], pd[2])
        parse_intensity(self.intensity)  # fail early on a bad spec

    # ------------------------------------------------------------------ geometry checks
    def needs_resampling(self, oriented_affine: np.ndarray) -> bool:
        """True if the oriented grid's spacing differs from ``pixdim`` on an axis where a target is set."""
        sp = spacing_from_affine(oriented_affine)
        return any(t > 0 and abs(s - t) > _SPACING_RTOL * t for s, t in zip(sp, self._target))

    def slab_compatible(self, affine: np.ndarray) -> bool:
        """Whether a volume with this affine can be processed slab by slab (see the module docstring).

        True when the source slice axis (2) remains axis 2 after ``Orientation(axcodes)`` and the spacing
        along it is kept (``pixdim[2] <= 0`` or equal to the source's).
        """
        if self.axcodes is not None and int(_ornt_transform(affine, self.axcodes)[2, 0]) != 2:
            return False
        z_spacing = spacing_from_affine(affine)[2]
        return self._target[2] <= 0 or abs(z_spacing - self._target[2]) <= _SPACING_RTOL * self._target[2]

    # ------------------------------------------------------------------ transforms
    def orient(self, img: MetaTensor) -> MetaTensor:
        """``Orientation(axcodes)`` of a ``(C, X, Y, Z)`` MetaTensor (returned as is when ``axcodes`` is None)."""
        if self.axcodes is None:
            return img
        return Orientation(axcodes=self.axcodes, labels=None)(img)

    def resample(self, oriented: MetaTensor, mode: str = "bilinear") -> MetaTensor:
        """MONAI ``Spacing`` to ``pixdim`` (unchanged input returned when no axis needs resampling).

        Slab callers must keep ``pixdim[2] <= 0`` so slices map one-to-one.
        """
        if not self.needs_resampling(np.asarray(oriented.affine, dtype=np.float64)):
            return oriented
        return Spacing(pixdim=self._target, mode=mode, padding_mode="border")(oriented)

    def back_to(
        self, probs: MetaTensor, dst_affine: np.ndarray | torch.Tensor, spatial_size: Sequence[int],
        mode: str = "bilinear",
    ) -> torch.Tensor:
        """Resample ``probs`` ``(K+1, x', y', n)`` (model grid, its affine) onto the grid ``dst_affine``/``spatial_size``.

        Returns a plain tensor ``(K+1, *spatial_size)``; identical grids are returned without resampling.
        """
        src = np.asarray(probs.affine, dtype=np.float64)
        dst = np.asarray(torch.as_tensor(dst_affine, dtype=torch.float64).cpu().numpy())
        if tuple(probs.shape[1:]) == tuple(spatial_size) and np.allclose(src, dst, atol=1e-6):
            return probs.as_tensor()
        out = SpatialResample(mode=mode, padding_mode="border", dtype=torch.float32)(
            probs, dst_affine=torch.as_tensor(dst), spatial_size=tuple(int(s) for s in spatial_size)
        )
        return out.as_tensor() if isinstance(out, MetaTensor) else out

    def source_axcodes(self, affine: np.ndarray) -> str:
        """Orientation code of the source grid (nibabel ``aff2axcodes``), used to undo :meth:`orient`."""
        return orientation_code(affine)
