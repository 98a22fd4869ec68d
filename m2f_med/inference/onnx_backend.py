"""ONNX Runtime as the CPU backend of the per-slice probability network (``--backend onnx|torch|auto``).

On 2 CPU cores ONNX Runtime runs the shipped organ model's probability network
(:class:`~m2f_med.networks.SemanticProbabilities`) in 0.22 s CPU where eager PyTorch needs 0.33-0.38 s (four
352² slices, 1 thread; outputs equal to 7e-7), see ``docs/performance.md``. The price is the export:
``torch.onnx.export`` works at a fixed input shape and takes 40-60 s on one core. So an export is made per
input shape ``(B, C, H, W)`` and kept in a cache folder (``$M2F_MED_CACHE`` or ``~/.cache/m2f-med``, under
``onnx/``), named by the weights' SHA-256, the slice shape, the batch size and the torch / onnx versions:

* ``backend="onnx"``: export when a shape is not cached yet (once), then run it with ONNX Runtime;
* ``backend="auto"``: ONNX Runtime where an export is already cached, eager PyTorch otherwise (never waits
  for an export);
* ``backend="torch"``: eager PyTorch.

The inference plan's whole slices are padded to multiples of 32, so a batch of scans needs few shapes. A
batch smaller than the exported one is zero-padded (and the padding dropped). Needs the optional packages of
the ``[onnx]`` extra (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["BACKENDS", "OnnxPredictor", "onnx_available", "cache_dir"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def onnx_available() -> bool:
    """Whether ``onnx``, ``onnxscript`` and ``onnxruntime`` are importable (the ``[onnx]`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in _PACKAGES)


def cache_dir() -> Path:
    """``$M2F_MED_CACHE/onnx`` or ``~/.cache/m2f-med/onnx`` (``$XDG_CACHE_HOME`` respected)."""
    base = os.environ.get("M2F_MED_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "m2f-med"
    return Path(base) / "onnx"


def _weights_digest(network: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(network.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


class OnnxPredictor:
    """``(B, C, H, W)`` → ``(B, K+1, H, W)`` probabilities with ONNX Runtime, one cached export per shape.

    Args:
        network: the :class:`~m2f_med.networks.Mask2FormerNet` (exported as ``SemanticProbabilities``).
        fallback: the eager predictor used where no export is cached and ``export`` is False.
        export: export shapes that are not cached (``backend="onnx"``); False = only use cached ones.
        threads: ONNX Runtime intra-op threads; ``None`` = ``torch.get_num_threads()``.
        folder: cache folder; ``None`` = :func:`cache_dir`.

    Raises:
        ImportError: the optional packages are missing (message names them).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        fallback: Callable[[torch.Tensor], torch.Tensor],
        export: bool = True,
        threads: int | None = None,
        folder: str | os.PathLike | None = None,
    ) -> None:
        missing = [m for m in _PACKAGES if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"the ONNX backend needs {missing}: pip install 'm2f-med[onnx]'")
        self.network = network
        self.fallback = fallback
        self.export = bool(export)
        self.threads = threads
        self.folder = Path(folder) if folder is not None else cache_dir()
        self._digest = _weights_digest(network)
        self._sessions: dict[tuple[int, int, int], tuple[object, int]] = {}  # (C, H, W) -> (session, batch)
        self.calls = {"onnx": 0, "torch": 0}

    def _stem(self, c: int, h: int, w: int) -> tuple[str, str]:
        import onnx

        versions = hashlib.sha256(f"torch{torch.__version__}-onnx{onnx.__version__}".encode()).hexdigest()[:8]
        return f"{self._digest}-c{c}h{h}w{w}-b", f"-{versions}.onnx"

    def _cached_batch(self, c: int, h: int, w: int) -> int | None:
        """The largest batch size cached for this slice shape, or ``None``."""
        head, tail = self._stem(c, h, w)
        sizes = []
        for p in self.folder.glob(f"{head}*{tail}") if self.folder.is_dir() else []:
            middle = p.name[len(head):-len(tail)]
            if middle.isdigit():
                sizes.append(int(middle))
        return max(sizes) if sizes else None

    def _session(self, b: int, c: int, h: int, w: int):
        key = (c, h, w)
        if key in self._sessions:
            return self._sessions[key]
        size = self._cached_batch(c, h, w)
        if size is None:
            if not self.export:
                return None
            from m2f_med.networks.export import export_onnx

            size = b
            log.info("exporting the probability network to ONNX for (%d, %d, %d, %d) (once; cached in %s)",
                     b, c, h, w, self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            head, tail = self._stem(c, h, w)
            export_onnx(self.network, self.folder / f"{head}{b}{tail}", (h, w), batch_size=b)
        import onnxruntime as ort

        head, tail = self._stem(c, h, w)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(self.threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        # like OMP_WAIT_POLICY=PASSIVE for torch: spinning threads cost 1.4-1.8x the CPU on a busy machine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(self.folder / f"{head}{size}{tail}"), opts,
                                       providers=["CPUExecutionProvider"])
        self._sessions[key] = (session, size)
        return self._sessions[key]

    def cached(self, c: int, h: int, w: int) -> bool:
        """Whether an export for slices ``(C, H, W)`` (any batch size) is in the cache folder."""
        return self._cached_batch(c, h, w) is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for ``x`` ``(B, C, H, W)`` float32 (CPU)."""
        b, c, h, w = (int(s) for s in x.shape)
        found = self._session(b, c, h, w)
        if found is None:
            self.calls["torch"] += 1
            return self.fallback(x)
        session, size = found
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = []
        for i in range(0, b, size):
            chunk = arr[i:i + size]
            n = chunk.shape[0]
            if n < size:  # the export has a fixed batch: pad with zero slices and drop their output
                chunk = np.concatenate([chunk, np.zeros((size - n, c, h, w), dtype=np.float32)])
            outs.append(session.run(None, {"image": chunk})[0][:n])
        self.calls["onnx"] += 1
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0])
