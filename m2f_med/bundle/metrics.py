"""Evaluation metric glue: HD95 in millimetres and metric reports with class names, written atomically.

MONAI's ``HausdorffDistance`` handler never passes voxel spacing to its metric, so distances come out in
voxels; on anisotropic CT (e.g. 0.8 × 0.8 × 5 mm) that is not a surface distance at all. MONAI's
``MetricsSaver`` names classes ``class0, class1, ...`` and writes in place. The two classes here keep MONAI's
computations and file formats and fix just that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.handlers import MetricsSaver
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.handlers.utils import write_metrics_reports
from monai.metrics import HausdorffDistanceMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction, string_list_all_gather

__all__ = ["HausdorffDistanceMM", "PhysicalHausdorffDistanceMetric", "ClassMetricsSaver"]


class PhysicalHausdorffDistanceMetric(HausdorffDistanceMetric):
    """``monai.metrics.HausdorffDistanceMetric`` that takes the voxel spacing (mm) from the label's affine.

    Inputs are one-hot ``(B, C, X, Y, Z)`` (or lists of ``(C, X, Y, Z)``) tensors as for MONAI's metric. When
    no ``spacing`` is passed and ``y`` is a ``MetaTensor``, its ``pixdim`` (column norms of the affine, mm)
    is used, so results are in mm. Plain tensors keep MONAI's behaviour (voxel units).

    Empty prediction or empty reference: the distance is undefined, never 0 (which would read as a perfect
    result). Such a case/class is NaN in the per-case buffer (MONAI may give ``inf``; it is turned into NaN),
    is left out of the mean, and is counted by :meth:`undefined_count`. A class (or the whole reduction)
    with no defined case at all aggregates to NaN, where MONAI's ``do_metric_reduction`` returns 0. This is
    the "NaN and count" convention rather than a fixed penalty such as BraTS' 373.13 mm, which depends on
    the image size of one challenge.

    Args:
        Same as ``HausdorffDistanceMetric`` (``include_background``, ``distance_metric``, ``percentile``,
        ``directed``, ``reduction``, ``get_not_nans``).
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if kwargs.get("spacing") is None and isinstance(y, MetaTensor):
            spacing = y.pixdim
            if isinstance(spacing, (list, tuple)) and spacing and not isinstance(spacing[0], (int, float)):
                kwargs["spacing"] = [tuple(float(s) for s in sp) for sp in spacing]
            else:
                kwargs["spacing"] = tuple(float(s) for s in spacing)
        out = super()._compute_tensor(y_pred, y, **kwargs)
        return torch.where(torch.isfinite(out), out, torch.full_like(out, float("nan")))

    def aggregate(self, reduction: MetricReduction | str | None = None):  # type: ignore[override]
        """Reduce like MONAI, but a reduction over no defined value is NaN, not 0.

        Returns:
            the reduced tensor (shape per ``reduction``), and the not-NaN counts when ``get_not_nans``.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be PyTorch Tensor.")
        # MONAI zeroes the NaNs of the tensor it is given: reduce a copy so the buffer keeps them
        f, not_nans = do_metric_reduction(data.clone(), reduction or self.reduction)
        if isinstance(f, torch.Tensor) and isinstance(not_nans, torch.Tensor):
            f = torch.where(not_nans > 0, f, torch.tensor(float("nan"), dtype=f.dtype, device=f.device))
        return (f, not_nans) if self.get_not_nans else f

    def undefined_count(self) -> int:
        """Number of (case, class) pairs whose distance is undefined (empty prediction or reference)."""
        data = self.get_buffer()
        return int(torch.isnan(data).sum().item()) if isinstance(data, torch.Tensor) else 0


class HausdorffDistanceMM(IgniteMetricHandler):
    """Ignite handler for the (percentile) Hausdorff distance in mm, e.g. HD95 with ``percentile=95``.

    Drop-in for ``monai.handlers.HausdorffDistance`` (same arguments); the labels must be MetaTensors (they
    are after ``LoadImaged`` / ``Invertd``) so their affine gives the spacing. Per-case, per-class values go
    to ``engine.state.metric_details[name]`` for ``MetricsSaver``. Empty prediction or label gives NaN (never
    0, see :class:`PhysicalHausdorffDistanceMetric`), left out of the mean; their number goes to
    ``engine.state.metrics[name + "_undefined"]`` (so ``metrics.csv`` has e.g. ``val_hd95_undefined``), and
    the mean itself is NaN when no case is defined.

    Args:
        include_background: include channel 0.
        distance_metric: ``"euclidean"`` (only this one uses the spacing), ``"chessboard"``, ``"taxicab"``.
        percentile: e.g. ``95`` for HD95; ``None`` for the maximum.
        directed: directed distance from prediction to label.
        reduction: MONAI ``MetricReduction`` over batch and classes.
        output_transform: engine output → ``(y_pred, y)``.
        save_details: keep per-case values in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = False,
        distance_metric: str = "euclidean",
        percentile: float | None = 95,
        directed: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PhysicalHausdorffDistanceMetric(
            include_background=include_background,
            distance_metric=distance_metric,
            percentile=percentile,
            directed=directed,
            reduction=reduction,
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def completed(self, engine, name) -> None:  # type: ignore[override]
        """Store the mean as ignite does, plus ``name + "_undefined"``: the count of NaN (case, class) pairs."""
        super().completed(engine, name)
        engine.state.metrics[f"{name}_undefined"] = self.metric_fn.undefined_count()


class ClassMetricsSaver(MetricsSaver):
    """``monai.handlers.MetricsSaver`` that names the class columns and replaces each report atomically.

    Writes ``metrics.csv`` (the epoch's metrics), ``{metric}_raw.csv`` (one row per case, one column per
    class plus ``mean``) and ``{metric}_summary.csv`` (mean, median, ... per class) into ``save_dir``, in
    MONAI's format (``monai.handlers.utils.write_metrics_reports``), on rank ``save_rank`` only.

    Args:
        save_dir: output folder (created if missing).
        class_labels: column names of the classes, in channel order (without background when the metrics
            exclude it), e.g. ``["liver", "spleen"]``.
        **kwargs: the other ``MetricsSaver`` arguments (``metrics``, ``metric_details``, ``summary_ops``, ...).
    """

    def __init__(self, save_dir: str, class_labels: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, **kwargs)
        self.class_labels = [str(c) for c in class_labels] if class_labels is not None else None

    def __call__(self, engine) -> None:
        import ignite.distributed as idist

        ws = idist.get_world_size()
        if self.save_rank >= ws:
            raise ValueError("target save rank is greater than the distributed group size.")
        images = string_list_all_gather(strings=self._filenames) if ws > 1 else self._filenames
        if idist.get_rank() != self.save_rank:
            return
        metrics = {}
        if self.metrics is not None and engine.state.metrics:
            metrics = {
                k: v for k, v in engine.state.metrics.items() if k in self.metrics or "*" in self.metrics
            }
        details = {}
        all_details = getattr(engine.state, "metric_details", {}) or {}
        if self.metric_details is not None:
            details = {
                k: v for k, v in all_details.items() if k in self.metric_details or "*" in self.metric_details
            }
        os.makedirs(self.save_dir, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".metrics.", suffix=".partial", dir=self.save_dir))
        try:
            write_metrics_reports(
                save_dir=str(staging),
                images=images or None,
                metrics=metrics,
                metric_details=details,
                summary_ops=self.summary_ops,
                deli=self.deli,
                output_type=self.output_type,
                class_labels=self.class_labels,
            )
            for f in staging.iterdir():
                os.replace(f, Path(self.save_dir) / f.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
