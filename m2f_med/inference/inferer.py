"""Slab-wise 2.5D volume inference on top of MONAI's ``SliceInferer``.

For each slab of axial slices the source slab (plus ``k`` context slices on each side, edge-replicated) is
oriented, resampled in-plane and intensity-mapped into the model space (:class:`ModelSpace`), stacked into
2.5D inputs (:class:`~m2f_med.transforms.SliceStack`), run through the network as chosen by the volume's
:class:`InferencePlan`, mapped back onto the source slab grid (bilinear on probabilities) and reduced to a
uint8 argmax.

Inference plan (chosen once per volume from its model-space slice size, :meth:`VolumeInferer.plan`):

* ``whole-slice``: the slice, zero-padded (after intensity mapping, like MONAI's window padding) to a
  multiple of 32 on each side and cropped back, goes through the network in one piece, several slices per
  forward pass. Used when one padded slice fits the *window budget*, the pixels of one forward pass of
  windows (``sw_batch_size x roi_h x roi_w``): peak memory then stays what the sliding-window plan needs,
  and no pixel is computed twice (4 overlapping 256² windows cover a 333² slice with 2.4x its pixels).
* ``sliding-window``: larger slices are tiled by MONAI's ``SliceInferer`` (``roi_size``, ``overlap``,
  Gaussian or constant blending, ``sw_batch_size`` windows per forward pass, across slices and in-plane
  positions).

On the real scans of the benchmark the two plans give the same masks up to a few boundary voxels (see
``docs/performance.md`` for the measured agreement); ``plan="sliding-window"`` restores the old path.

Only the uint8 label (and, when asked, a uint8 map of the highest foreground probability, 0–255) is kept for the whole volume: float buffers exist for one slab at a time.

See Also:
    MONAI ``monai.inferers.SliceInferer`` / ``SlidingWindowInferer``; Mask2Former semantic inference
    (Cheng et al., CVPR 2022, Sec. 3.4) is done by the network's predictor, not here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import Orientation
from tqdm.auto import tqdm

from m2f_med.inference.preprocessing import ModelSpace, intensity_transform
from m2f_med.transforms.slice_stack import SliceStack, take_slices

__all__ = ["VolumeInferer", "InferencePlan", "left_right_pairs", "SlabResult", "AMP_DTYPES", "PLANS", "resolve_device",
           "shift_affine"]

log = logging.getLogger(__name__)

AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
              "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

Predictor = Callable[[torch.Tensor], torch.Tensor]

PLANS = ("auto", "whole-slice", "sliding-window")
PAD_MULTIPLE = 32  # the Mask2Former ResNet/Swin backbones downsample 32x; padded slices keep every stage aligned


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` → ``cuda`` if available else ``cpu``; otherwise ``torch.device(device)``.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def shift_affine(affine: np.ndarray | torch.Tensor, z: int) -> torch.Tensor:
    """The 4×4 affine (float64) of the sub-volume starting at slice index ``z`` along axis 2."""
    aff = torch.as_tensor(affine, dtype=torch.float64).detach().cpu().clone()
    aff[:3, 3] += aff[:3, 2] * float(z)
    return aff


@dataclass(frozen=True)
class InferencePlan:
    """How a volume's model-space slices go through the network (see the module docstring).

    Attributes:
        mode: ``"whole-slice"`` or ``"sliding-window"``.
        slice_shape: ``(x, y)`` model-space slice size (voxels).
        input_shape: ``(h, w)`` network input: the padded slice (whole-slice) or the window (sliding-window).
        slices_per_forward: whole-slice: slices per forward pass; sliding-window: ``sw_batch_size`` windows.
        window_budget: pixels one forward pass may hold (``sw_batch_size x roi_h x roi_w``; ``None``: no
            window set, whole slices always).
    """

    mode: str
    slice_shape: tuple[int, int]
    input_shape: tuple[int, int]
    slices_per_forward: int
    window_budget: int | None

    def describe(self) -> dict:
        """JSON-friendly form for run reports."""
        return {"mode": self.mode, "slice_shape": list(self.slice_shape), "input_shape": list(self.input_shape),
                "batch": self.slices_per_forward, "window_budget": self.window_budget}


def _padded(n: int) -> int:
    return -(-int(n) // PAD_MULTIPLE) * PAD_MULTIPLE


@dataclass
class SlabResult:
    """Outputs of :meth:`VolumeInferer.__call__` on the source grid.

    Attributes:
        label: ``(1, X, Y, Z)`` uint8 argmax (0 = background).
        probability: ``(1, X, Y, Z)`` uint8, ``round(255 * max_{c>=1} p_c)``, or ``None`` if not asked.
        confidence_sum: ``(K+1,)`` float64, per class the sum over voxels labelled ``c`` of ``p_c``.
        voxel_count: ``(K+1,)`` int64 voxels per label.
        num_classes: ``K + 1`` output channels of the predictor (background included).
        plan: the :class:`InferencePlan` used (``None`` for an empty volume).
    """

    label: torch.Tensor
    probability: torch.Tensor | None
    confidence_sum: np.ndarray
    voxel_count: np.ndarray
    num_classes: int
    plan: InferencePlan | None = None


def left_right_pairs(labels: Mapping[int, str]) -> list[tuple[int, int]]:
    """Channel pairs ``(left, right)`` of classes named ``*_left`` / ``*_right`` (TotalSegmentator spelling).

    Args:
        labels: ``{channel: name}`` of the foreground classes (channel 0 is background).

    Returns:
        e.g. ``[(4, 3)]`` for ``{3: "kidney_right", 4: "kidney_left"}``; classes without a partner are left out.
    """
    by_name = {str(n): int(c) for c, n in labels.items()}
    pairs = []
    for name, c in by_name.items():
        if name.endswith("_left") and name[: -len("_left")] + "_right" in by_name:
            pairs.append((c, by_name[name[: -len("_left")] + "_right"]))
    return sorted(pairs)


class VolumeInferer:
    """Run a 2D/2.5D per-slice predictor over a 3D volume, slab by slab, with MONAI ``SliceInferer`` tiling.

    Args:
        num_context: ``k``, neighbouring slices per side stacked as channels (0 = plain 2D).
        roi_size: in-plane window ``(h, w)`` in model-space voxels; ``None`` = the whole slice. Slices
            smaller than the window are padded (constant ``0`` after intensity mapping) and cropped back.
        sw_batch_size: windows per forward pass (over slices and in-plane positions together); with
            ``roi_size`` it sets the window budget of the inference plan.
        plan: ``"auto"`` (whole slices when a padded slice fits the window budget, else sliding windows),
            ``"whole-slice"`` or ``"sliding-window"`` (see the module docstring).
        overlap: window overlap fraction in ``[0, 1)``.
        mode: blending, ``"gaussian"`` or ``"constant"`` (MONAI ``BlendMode``).
        sigma_scale: Gaussian sigma as a fraction of the window size.
        slab_size: slices per slab; bounds the float buffers to ``(K+1) × X × Y × slab_size``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        amp: autocast the forward pass on CUDA (ignored on CPU, where fp32 is faster; see FACTS).
        amp_dtype: ``"float16"`` or ``"bfloat16"``.
        flip_tta: average the predictions of the input and its in-plane flips (``tta_flips``).
        tta_flips: in-plane axes flipped by ``flip_tta``: 0 = the model space's first axis, left/right in
            its RAS orientation; 1 = anterior/posterior.
        lr_swap: pairs of output channels ``(left, right)`` exchanged after undoing a left/right flip, so
            that a flipped left kidney counts as the left kidney (:func:`left_right_pairs`). Without it a
            left/right flip averages each paired class with its mirror image.
        activation: ``"none"`` if the predictor returns probabilities ``(B, K+1, H, W)``, ``"softmax"`` if
            it returns logits.
        progress: show a tqdm bar over slices.
        callback: called as ``callback(done, total)`` with slices finished so far, once before the first
            window batch and after every window batch and slab; front ends use it for progress bars and
            cancel by raising from it (the exception propagates out of ``__call__`` unchanged).

    Raises:
        ValueError: invalid settings.
    """

    def __init__(
        self,
        num_context: int = 0,
        roi_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        slab_size: int = 16,
        device: str | torch.device | None = "cpu",
        plan: str = "auto",
        amp: bool = False,
        amp_dtype: str = "float16",
        flip_tta: bool = False,
        tta_flips: Sequence[int] = (0, 1),
        lr_swap: Sequence[tuple[int, int]] = (),
        activation: str = "none",
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> None:
        if num_context < 0:
            raise ValueError(f"num_context must be >= 0; got {num_context}")
        if roi_size is not None and (len(roi_size) != 2 or min(int(r) for r in roi_size) < 1):
            raise ValueError(f"roi_size must be two positive ints (in-plane) or None; got {roi_size}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1); got {overlap}")
        if mode not in ("gaussian", "constant"):
            raise ValueError(f"mode must be 'gaussian' or 'constant'; got {mode!r}")
        if activation not in ("none", "softmax"):
            raise ValueError(f"activation must be 'none' or 'softmax'; got {activation!r}")
        if str(amp_dtype) not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}; got {amp_dtype!r}")
        if slab_size < 1 or sw_batch_size < 1:
            raise ValueError("slab_size and sw_batch_size must be >= 1")
        if plan not in PLANS:
            raise ValueError(f"plan must be one of {', '.join(PLANS)}; got {plan!r}")
        self.plan_mode = plan
        self.num_context = int(num_context)
        self.roi_size = None if roi_size is None else (int(roi_size[0]), int(roi_size[1]))
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.sigma_scale = float(sigma_scale)
        self.slab_size = int(slab_size)
        self.device = resolve_device(device)
        self.amp = bool(amp)
        self.amp_dtype = AMP_DTYPES[str(amp_dtype)]
        self.flip_tta = bool(flip_tta)
        if not set(int(a) for a in tta_flips) <= {0, 1}:
            raise ValueError(f"tta_flips must be in-plane axes 0 and/or 1; got {tta_flips}")
        self.tta_flips = tuple(sorted({int(a) for a in tta_flips}))
        self.lr_swap = tuple((int(a), int(b)) for a, b in lr_swap)
        self.activation = activation
        self.progress = progress
        self.callback = callback
        self._done, self._total = 0, 0
        if self.amp and self.device.type != "cuda":
            log.info("amp ignored on %s: CPU inference runs in fp32", self.device)

    # ------------------------------------------------------------------ one slab
    def _report(self) -> None:
        if self.callback is not None:
            self.callback(self._done, self._total)

    def _forward(self, predictor: Predictor, x: torch.Tensor) -> torch.Tensor:
        self._report()
        y = predictor(x)
        if isinstance(y, MetaTensor):
            y = y.as_tensor()
        y = y.float()
        return torch.softmax(y, dim=1) if self.activation == "softmax" else y

    def _predict_windows(self, predictor: Predictor, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, K+1, h, w)`` for a batch of windows ``(B, C', h, w)``, with optional flip TTA."""
        out = self._forward(predictor, x)
        if self.flip_tta and self.tta_flips:
            for axis in self.tta_flips:
                dims = (2 + axis,)
                flipped = torch.flip(self._forward(predictor, torch.flip(x, dims)), dims)
                if axis == 0 and self.lr_swap:
                    order = list(range(flipped.shape[1]))
                    for a, b in self.lr_swap:
                        order[a], order[b] = b, a
                    flipped = flipped[:, order]
                out = out + flipped
            out = out / (1 + len(self.tta_flips))
        return out

    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def plan(self, slice_shape: Sequence[int]) -> InferencePlan:
        """The inference plan for model-space slices of ``slice_shape`` ``(x, y)`` (see the module docstring)."""
        sx, sy = (int(s) for s in slice_shape[:2])
        padded = (_padded(sx), _padded(sy))
        budget = None if self.roi_size is None else self.sw_batch_size * self.roi_size[0] * self.roi_size[1]
        whole = self.plan_mode == "whole-slice" or (
            self.plan_mode == "auto" and (budget is None or padded[0] * padded[1] <= budget)
        )
        if whole:
            per = 1 if budget is None else max(1, budget // (padded[0] * padded[1]))
            return InferencePlan("whole-slice", (sx, sy), padded, per, budget)
        return InferencePlan("sliding-window", (sx, sy), tuple(self.roi_size), self.sw_batch_size, budget)

    def _whole_slices(self, stack: torch.Tensor, predictor: Predictor, plan: InferencePlan) -> torch.Tensor:
        """``(C', x, y, n)`` → ``(K+1, x, y, n)``: padded whole slices, ``plan.slices_per_forward`` at a time."""
        sx, sy = plan.slice_shape
        px, py = plan.input_shape
        x0, y0 = (px - sx) // 2, (py - sy) // 2  # centred, as MONAI pads windows
        batch = stack.permute(3, 0, 1, 2)  # (n, C', x, y)
        batch = torch.nn.functional.pad(batch, (y0, py - sy - y0, x0, px - sx - x0), value=0.0)
        out: torch.Tensor | None = None
        n = int(batch.shape[0])
        for i in range(0, n, plan.slices_per_forward):
            y = self._predict_windows(predictor, batch[i:i + plan.slices_per_forward].to(self.device))
            if out is None:
                out = torch.empty((int(y.shape[1]), sx, sy, n), dtype=torch.float32, device=self.device)
            out[..., i:i + y.shape[0]] = y[:, :, x0:x0 + sx, y0:y0 + sy].permute(1, 2, 3, 0)
        return out

    def infer_slab(self, model_slab: torch.Tensor, predictor: Predictor) -> torch.Tensor:
        """Probabilities for the centre slices of a model-space slab.

        Args:
            model_slab: ``(C, x, y, n + 2k)`` intensity-mapped model-space slab whose first and last ``k``
                slices are context (edge-replicated at the volume ends).
            predictor: ``(B, C·(2k+1), h, w)`` → ``(B, K+1, h, w)`` probabilities (or logits with
                ``activation="softmax"``).

        Returns:
            ``(K+1, x, y, n)`` float32 on ``self.device``.

        Raises:
            ValueError: the slab has fewer than ``2k + 1`` slices.
        """
        k = self.num_context
        n = int(model_slab.shape[-1]) - 2 * k
        if n < 1:
            raise ValueError(f"a slab needs at least 2k+1 = {2 * k + 1} slices; got {model_slab.shape[-1]}")
        plain = model_slab.as_tensor() if isinstance(model_slab, MetaTensor) else model_slab
        stack = SliceStack(k)(plain.float(), index=range(k, k + n))  # (C(2k+1), x, y, n)
        plan = self.plan(stack.shape[1:3])
        if plan.mode == "whole-slice":
            with torch.inference_mode(), self._autocast():
                return self._whole_slices(stack, predictor, plan).float()
        roi = self.roi_size or tuple(int(s) for s in stack.shape[1:3])
        inferer = SliceInferer(
            spatial_dim=2, roi_size=roi, sw_batch_size=self.sw_batch_size, overlap=self.overlap,
            mode=self.mode, sigma_scale=self.sigma_scale, padding_mode="constant", cval=0.0,
            sw_device=self.device, device=self.device, progress=False,
        )
        with torch.inference_mode(), self._autocast():
            out = inferer(stack[None].to(self.device), lambda x: self._predict_windows(predictor, x))
        return out[0].float()

    # ------------------------------------------------------------------ whole volume
    def __call__(
        self,
        volume: MetaTensor,
        predictor: Predictor,
        space: ModelSpace | None = None,
        keep_probability: bool = False,
    ) -> SlabResult:
        """Segment a volume slab by slab; outputs are on the volume's own grid.

        Args:
            volume: ``(C, X, Y, Z)`` MetaTensor with its RAS affine (mm); never modified.
            predictor: see :meth:`infer_slab`.
            space: the model's input space; ``None`` = the volume as it is (no orientation, resampling or
                intensity change). It must be slab-compatible with the volume
                (:meth:`ModelSpace.slab_compatible`).
            keep_probability: also return the uint8 highest-foreground-probability map.

        Returns:
            :class:`SlabResult` on the source grid.

        Raises:
            ValueError: ``volume`` is not ``(C, X, Y, Z)``, the space needs whole-volume resampling, or the
                predictor returns a wrong shape / more than 256 classes.
        """
        if volume.ndim != 4:
            raise ValueError(f"expected a (C, X, Y, Z) volume; got shape {tuple(volume.shape)}")
        if not isinstance(volume, MetaTensor):
            volume = MetaTensor(volume)
        space = space or ModelSpace(pixdim=None, axcodes=None, intensity=None)
        src_aff = np.asarray(volume.affine, dtype=np.float64)
        if not space.slab_compatible(src_aff):
            raise ValueError("this volume needs whole-volume resampling; use m2f_med.inference.predict_volume")
        _, nx, ny, nz = (int(s) for s in volume.shape)
        k = self.num_context
        src_codes = space.source_axcodes(src_aff)
        to_intensity = intensity_transform(space.intensity, volume)
        plain = volume.as_tensor()
        label = torch.zeros((1, nx, ny, nz), dtype=torch.uint8)
        prob = torch.zeros((1, nx, ny, nz), dtype=torch.uint8) if keep_probability else None
        conf_sum: np.ndarray | None = None
        count: np.ndarray | None = None
        num_classes = 0
        plan: InferencePlan | None = None
        bar = tqdm(total=nz, unit="slice", disable=not self.progress, leave=False, desc="slices")
        self._done, self._total = 0, nz
        for s0 in range(0, nz, self.slab_size):
            s1 = min(nz, s0 + self.slab_size)
            n = s1 - s0
            ext = np.clip(np.arange(s0 - k, s1 + k), 0, nz - 1)
            slab = MetaTensor(take_slices(plain, ext).to(torch.float32, copy=True), affine=shift_affine(src_aff, s0 - k))
            oriented = space.orient(slab)
            model = space.resample(oriented)
            x = to_intensity(model.as_tensor() if isinstance(model, MetaTensor) else model)
            plan = plan or self.plan(x.shape[1:3])
            probs = self.infer_slab(x, predictor)
            if probs.shape[-1] != n or probs.shape[1:3] != model.shape[1:3]:
                raise ValueError(f"predictor output has spatial shape {tuple(probs.shape[1:])}; "
                                 f"expected {(*model.shape[1:3], n)}")
            if num_classes == 0:
                num_classes = int(probs.shape[0])
                if not 2 <= num_classes <= 256:
                    raise ValueError(f"predictor returns {num_classes} channels; need 2..256 (background + classes)")
                conf_sum, count = np.zeros(num_classes), np.zeros(num_classes, dtype=np.int64)
            back = space.back_to(
                MetaTensor(probs, affine=shift_affine(model.affine, k)),
                shift_affine(oriented.affine, k), (*oriented.shape[1:3], n),
            )
            top, lab = back.max(dim=0)  # (x, y, n) in the oriented frame
            fg = back[1:].max(dim=0).values if prob is not None else None
            del back, probs
            lab8 = lab.to(torch.uint8)
            counts = torch.bincount(lab8.reshape(-1).long(), minlength=num_classes)
            sums = torch.bincount(lab8.reshape(-1).long(), weights=top.reshape(-1).double(), minlength=num_classes)
            count += counts[:num_classes].cpu().numpy()
            conf_sum += sums[:num_classes].cpu().numpy()
            chans = [lab8] if fg is None else [lab8, (fg.clamp(0, 1) * 255).round().to(torch.uint8)]
            out = torch.stack(chans)
            if space.axcodes is not None:  # undo the orientation: permutation/flip only, exact
                out = Orientation(axcodes=src_codes, labels=None)(
                    MetaTensor(out, affine=shift_affine(oriented.affine, k))
                ).as_tensor()
            out = out.cpu()
            if tuple(out.shape[1:]) != (nx, ny, n):
                raise ValueError(f"internal: slab came back as {tuple(out.shape[1:])}, expected {(nx, ny, n)}")
            label[0, :, :, s0:s1] = out[0]
            if prob is not None:
                prob[0, :, :, s0:s1] = out[1]
            bar.update(n)
            self._done += n
            self._report()
        bar.close()
        return SlabResult(label=label, probability=prob, confidence_sum=conf_sum, voxel_count=count,
                          num_classes=num_classes, plan=plan)
