"""Load a MONAI bundle into a ready-to-run model for volume inference (``load_bundle``).

The bundle's ``configs/inference.yaml`` (or ``.yml`` / ``.json``) is read with MONAI's ``ConfigParser``;
the keys are specified in ``docs/bundle_contract.md``. ``bundle_root`` is set to the bundle folder, so
``$@bundle_root + '/models/model.pt'`` resolves wherever the bundle lives. Weights are read with
``torch.load(weights_only=True)`` or safetensors, never by unpickling arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m2f_med.inference.inferer import VolumeInferer, left_right_pairs, resolve_device
from m2f_med.inference.postprocessing import parse_postprocessing
from m2f_med.inference.preprocessing import ModelSpace, parse_intensity
from m2f_med.io.errors import VolumeError

__all__ = ["BundleModel", "load_bundle", "load_state_dict", "CONFIG_NAMES"]

log = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.yaml", "inference.yml", "inference.json")
_STATE_KEYS = ("network", "state_dict", "model")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights from ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    A checkpoint may be the state dict itself or a dict holding it under ``"network"`` (MONAI's
    ``CheckpointSaver``), ``"state_dict"`` or ``"model"``. A ``module.`` prefix (DataParallel) is removed.

    Raises:
        VolumeError: the file is missing, unreadable, or holds no state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise VolumeError(p, "checkpoint not found")
    try:
        if p.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad checkpoint for the user
        raise VolumeError(p, f"cannot read checkpoint: {type(err).__name__}: {err}") from None
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VolumeError(p, "checkpoint holds no state dict (expected {name: tensor} or {'network': {...}})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _is_mask2former(net: nn.Module) -> bool:
    try:
        from m2f_med.networks import Mask2FormerNet
    except ImportError:  # pragma: no cover - networks layer absent
        return False
    return isinstance(net, Mask2FormerNet)


@dataclass
class BundleModel:
    """A network with everything volume inference needs to run it as it was trained.

    Built by :func:`load_bundle`, or directly (tests, the napari plugin with an in-memory network).

    Attributes:
        network: the ``nn.Module`` (eval mode, on ``device``).
        labels: ``{label id: structure name}`` (ids ``1..K``, snake_case names as in TotalSegmentator).
        num_context_slices: ``k``; the network takes ``C·(2k + 1)`` channels.
        pixdim: target spacing (mm), see :class:`~m2f_med.inference.preprocessing.ModelSpace`.
        axcodes: input orientation (``"RAS"``).
        intensity: intensity spec (CT window or percentile).
        roi_size: in-plane sliding window (model-space voxels); ``None`` = whole slice.
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction.
        blend_mode: ``"gaussian"`` or ``"constant"``.
        inference_plan: ``"auto"`` (whole slices when they fit the window budget), ``"whole-slice"`` or
            ``"sliding-window"`` (bundle key ``inference_plan``; see :mod:`m2f_med.inference.inferer`).
        backend: ``"torch"`` (eager), ``"onnx"`` or ``"auto"`` (ONNX Runtime on CPU, see
            :mod:`m2f_med.inference.onnx_backend`); Mask2Former networks only, others always run eager.
        output: ``"auto"`` (Mask2Former → semantic probabilities, other networks → softmax of logits),
            ``"probabilities"`` or ``"logits"``.
        modality: the modality the model expects (``"CT"``, ``"MR"``) or ``None`` for any.
        postprocessing: spec for :func:`~m2f_med.inference.postprocessing.postprocess_label` (bundle key
            ``label_postprocessing``; the bundle's ``postprocessing`` key is MONAI's transform chain).
        device: where the network lives.
        bundle_dir: the bundle folder (``None`` for an in-memory model).
        checkpoint: the weights file read, if any.
        metadata: ``configs/metadata.json`` content (name, version, ...), if present.
        thing_classes: label ids that are instances (lesions; bundle key ``thing_classes``); empty for a
            purely semantic model. With any, ``predict`` also writes instance outputs
            (:mod:`m2f_med.inference.instances`).
        instance_settings: :class:`~m2f_med.inference.instances.InstanceSettings` (bundle key
            ``instance_inference``).
        lesion_qc: :class:`~m2f_med.inference.lesion_qc.LesionQCSettings` (bundle key ``lesion_qc``): what the
            training data covered, for the lesion QC of instance models.
    """

    network: nn.Module
    labels: dict[int, str]
    num_context_slices: int = 0
    pixdim: Sequence[float] | None = None
    axcodes: str | None = "RAS"
    intensity: Mapping[str, Any] | None = None
    roi_size: Sequence[int] | None = None
    sw_batch_size: int = 4
    overlap: float = 0.25
    blend_mode: str = "gaussian"
    inference_plan: str = "auto"
    backend: str = "torch"
    output: str = "auto"
    modality: str | None = None
    postprocessing: Mapping[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bundle_dir: Path | None = None
    checkpoint: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    thing_classes: tuple[int, ...] = ()
    instance_settings: Any = None
    lesion_qc: Any = None

    def __post_init__(self) -> None:
        self.labels = {int(k): str(v) for k, v in self.labels.items()}
        ids = sorted(self.labels)
        if not ids or ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"labels must be numbered 1..K without gaps; got {ids}")
        if self.output not in ("auto", "probabilities", "logits"):
            raise ValueError(f"output must be 'auto', 'probabilities' or 'logits'; got {self.output!r}")
        self.postprocessing = parse_postprocessing(self.postprocessing)
        self.thing_classes = tuple(int(v) for v in self.thing_classes)
        unknown = set(self.thing_classes) - set(self.labels)
        if unknown:
            raise ValueError(f"thing_classes {sorted(unknown)} are not label ids {sorted(self.labels)}")
        from m2f_med.inference.instances import InstanceSettings

        if not isinstance(self.instance_settings, InstanceSettings):
            self.instance_settings = InstanceSettings.from_mapping(self.instance_settings)
        from m2f_med.inference.lesion_qc import LesionQCSettings

        if not isinstance(self.lesion_qc, LesionQCSettings):
            self.lesion_qc = LesionQCSettings.from_mapping(self.lesion_qc, low_score=self.instance_settings.low_score)
        parse_intensity(self.intensity)
        self.network.eval()
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx'; got {self.backend!r}")
        self._predictor: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._predictor_backend = self.backend

    @property
    def num_classes(self) -> int:
        """``K``, foreground classes (the predictor returns ``K + 1`` channels)."""
        return len(self.labels)

    @property
    def predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``(B, C·(2k+1), H, W)`` → ``(B, K+1, H, W)`` (probabilities, or logits when :attr:`activation` is softmax)."""
        if self._predictor is None or self._predictor_backend != self.backend:
            if self.output == "auto" and _is_mask2former(self.network):
                from m2f_med.networks import SemanticProbabilities

                self._predictor = SemanticProbabilities(self.network).eval()
                if self.backend != "torch" and self.device.type == "cpu":
                    self._predictor = self._onnx_predictor(self._predictor)
            else:
                if self.backend == "onnx":
                    raise ValueError("the ONNX backend needs a Mask2Former bundle (network_output auto)")
                self._predictor = self.network
            self._predictor_backend = self.backend
        return self._predictor

    def _onnx_predictor(self, eager: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        from m2f_med.inference.onnx_backend import OnnxPredictor, onnx_available

        if self.backend == "auto" and not onnx_available():
            return eager
        try:
            return OnnxPredictor(self.network, fallback=eager, export=self.backend == "onnx")
        except ImportError as err:
            raise ValueError(str(err)) from None

    @property
    def activation(self) -> str:
        """``"none"`` if :attr:`predictor` returns probabilities, ``"softmax"`` if it returns logits."""
        if self.output == "probabilities" or (self.output == "auto" and _is_mask2former(self.network)):
            return "none"
        return "softmax"

    def model_space(self) -> ModelSpace:
        """The model's input space (orientation, spacing, intensity)."""
        return ModelSpace(pixdim=self.pixdim, axcodes=self.axcodes, intensity=self.intensity)

    def make_inferer(self, **overrides: Any) -> VolumeInferer:
        """A :class:`VolumeInferer` with this model's settings; keyword arguments override them."""
        opts: dict[str, Any] = {
            "num_context": self.num_context_slices, "roi_size": self.roi_size,
            "sw_batch_size": self.sw_batch_size, "overlap": self.overlap, "mode": self.blend_mode,
            "device": self.device, "activation": self.activation, "plan": self.inference_plan,
            # flip TTA keeps left/right classes: a mirrored left kidney is scored as the left kidney
            "lr_swap": left_right_pairs(self.labels),
        }
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return VolumeInferer(**opts)

    def to(self, device: str | torch.device) -> BundleModel:
        """Move the network to ``device`` (``"auto"`` picks CUDA when available); returns ``self``."""
        self.device = resolve_device(device)
        self.network.to(self.device)
        self._predictor = None
        return self

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for run reports (no weights)."""
        ckpt_hash = None
        if self.checkpoint is not None and self.checkpoint.is_file():
            h = hashlib.sha256()
            with open(self.checkpoint, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            ckpt_hash = h.hexdigest()
        return {
            "bundle_dir": None if self.bundle_dir is None else str(self.bundle_dir),
            "name": self.metadata.get("name"), "version": self.metadata.get("version"),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoint_sha256": ckpt_hash, "network": type(self.network).__name__,
            "labels": {str(k): v for k, v in self.labels.items()}, "num_context_slices": self.num_context_slices,
            "pixdim": None if self.pixdim is None else list(self.pixdim), "intensity": dict(self.intensity or {}),
            "roi_size": None if self.roi_size is None else list(self.roi_size), "modality": self.modality,
            "thing_classes": list(self.thing_classes), "inference_plan": self.inference_plan,
        }


def _find_config(bundle_dir: Path, config_file: str | os.PathLike | None) -> Path:
    if config_file is not None:
        p = Path(config_file)
        p = p if p.is_absolute() else bundle_dir / p
        if not p.is_file():
            raise VolumeError(p, "bundle config not found")
        return p
    for name in CONFIG_NAMES:
        p = bundle_dir / "configs" / name
        if p.is_file():
            return p
    raise VolumeError(bundle_dir, f"not a bundle: no configs/{' or configs/'.join(CONFIG_NAMES)}")


def load_bundle(
    bundle_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    config_file: str | os.PathLike | None = None,
) -> BundleModel:
    """Build the network of a MONAI bundle, load its weights and read its inference settings.

    Args:
        bundle_dir: the bundle folder (holding ``configs/`` and ``models/``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        config_file: another config instead of ``configs/inference.yaml`` (relative to the bundle).

    Returns:
        A :class:`BundleModel` in eval mode on ``device``.

    Raises:
        VolumeError: not a bundle, a config that cannot be parsed or lacks ``network_def`` / ``labels``, a
            bad setting, a missing or unreadable checkpoint, or weights that do not fit the network (names
            the file and the mismatching keys).

    See Also:
        ``docs/bundle_contract.md``; MONAI ``monai.bundle.ConfigParser``.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir).expanduser().resolve()
    if not root.is_dir():
        raise VolumeError(root, "bundle folder not found")
    cfg_path = _find_config(root, config_file)
    parser = ConfigParser()
    try:
        parser.read_config(str(cfg_path))
    except Exception as err:  # noqa: BLE001
        raise VolumeError(cfg_path, f"cannot parse bundle config: {err}") from None
    parser["bundle_root"] = str(root)
    meta_path = root / "configs" / "metadata.json"
    metadata: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise VolumeError(meta_path, f"cannot read bundle metadata: {err}") from None

    def get(key: str, default: Any = None) -> Any:
        if key not in parser:
            return default
        try:
            return parser.get_parsed_content(key)
        except Exception as err:  # noqa: BLE001 - ConfigParser raises many types
            raise VolumeError(cfg_path, f"cannot evaluate {key!r}: {type(err).__name__}: {err}") from None

    for key in ("network_def", "labels"):
        if key not in parser:
            raise VolumeError(cfg_path, f"bundle config has no {key!r}")
    network = get("network_def")
    if not isinstance(network, nn.Module):
        raise VolumeError(cfg_path, f"network_def must build a torch.nn.Module; got {type(network).__name__}")
    ckpt_default = root / "models" / "model.pt"
    ckpt = Path(get("ckpt_path", str(ckpt_default)))
    if not ckpt.is_file() and ckpt.suffix == ".pt" and ckpt.with_suffix(".safetensors").is_file():
        ckpt = ckpt.with_suffix(".safetensors")
    state = load_state_dict(ckpt)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[:6]
        raise VolumeError(ckpt, "weights do not fit network_def: " + " ".join(s.strip() for s in first)) from None

    from m2f_med.networks import slice_network

    network = slice_network(network)  # network_def is the volume probability wrapper; predict tiles slices
    blend = get("blend_mode", get("mode", "gaussian"))
    roi = get("roi_size")
    try:
        model = BundleModel(
            network=network,
            labels=get("labels"),
            num_context_slices=int(get("num_context_slices", 0)),
            pixdim=get("pixdim"),
            axcodes=get("axcodes", "RAS"),
            intensity=get("intensity"),
            roi_size=None if roi is None else [int(r) for r in roi][:2],
            sw_batch_size=int(get("sw_batch_size", 4)),
            overlap=float(get("overlap", 0.25)),
            blend_mode=str(blend),
            inference_plan=str(get("inference_plan", "auto")),
            output=str(get("network_output", "auto")),
            modality=get("modality"),
            postprocessing=get("label_postprocessing") or {},
            bundle_dir=root,
            checkpoint=ckpt,
            metadata=metadata,
            thing_classes=tuple(get("thing_classes", ()) or ()),
            instance_settings=get("instance_inference") or {},
            lesion_qc=get("lesion_qc") or {},
        )
        ModelSpace(pixdim=model.pixdim, axcodes=model.axcodes, intensity=model.intensity)
        model.make_inferer()  # validates roi / overlap / mode
    except (ValueError, TypeError) as err:
        raise VolumeError(cfg_path, f"bad inference setting: {err}") from None
    in_ch = getattr(network, "in_channels", None)
    if in_ch is not None and int(in_ch) % (2 * model.num_context_slices + 1):
        raise VolumeError(cfg_path, f"network has {in_ch} input channels, not a multiple of 2k+1 = "
                                    f"{2 * model.num_context_slices + 1} (num_context_slices)")
    log.info("loaded bundle %s (%d classes, k=%d)", root.name, model.num_classes, model.num_context_slices)
    return model.to(device)
