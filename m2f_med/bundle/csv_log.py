"""A CSV log of training: one row per epoch with the mean loss, learning rate, time and validation metrics.

TensorBoard is for looking; a CSV is for reading into a table or a plot script. MONAI's ``StatsHandler`` only
prints and ``MetricsSaver`` only records evaluations, so this handler writes the training history. The
whole file is rewritten atomically each epoch (it is small), so a killed run never leaves a torn row, and a
resumed run keeps the rows of the epochs before the checkpoint.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from m2f_med.io.atomic import atomic_write

__all__ = ["CSVStatsHandler"]


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() == 1 else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _rank() -> int:
    return (
        torch.distributed.get_rank()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else 0
    )


class CSVStatsHandler:
    """Ignite handler for a trainer: append one row per epoch to ``log_path`` (CSV, comma separated).

    Columns: ``epoch``, ``iterations`` (global), ``train_loss`` (mean of ``engine.state.output[loss_key]``
    over the epoch), ``lr`` (first parameter group), ``epoch_seconds``, then, for epochs on which the
    ``evaluator`` ran (``monai.handlers.ValidationHandler`` attached before this handler), every scalar in
    ``evaluator.state.metrics`` and the per-class means of ``evaluator.state.metric_details[key]`` as
    ``{key}_{class}`` (e.g. ``val_mean_dice_liver``; NaN-aware means over cases).

    Args:
        log_path: the CSV file (parent folders created).
        evaluator: the validation engine, or ``None``.
        class_names: names of the metric-detail channels, in order (e.g. the foreground classes).
        detail_keys: which ``metric_details`` to expand per class (default: all).
        loss_key: key of the loss in the trainer's output dict.

    Only rank 0 writes in a distributed run. Attach with ``handler.attach(trainer)`` (MONAI does this for
    entries of ``train_handlers``).
    """

    def __init__(
        self,
        log_path: str | os.PathLike,
        evaluator: Any = None,
        class_names: Sequence[str] | None = None,
        detail_keys: Sequence[str] | None = None,
        loss_key: str = "loss",
    ) -> None:
        self.log_path = Path(log_path)
        self.evaluator = evaluator
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self.detail_keys = list(detail_keys) if detail_keys is not None else None
        self.loss_key = loss_key
        self._losses: list[float] = []
        self._rows: list[dict[str, Any]] | None = None

    def attach(self, engine) -> None:
        """Register on ``engine`` (a MONAI/ignite trainer)."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _epoch_started(self, engine) -> None:
        self._losses = []

    def _iteration_completed(self, engine) -> None:
        output = engine.state.output
        if isinstance(output, (list, tuple)):  # decollated output: the loss is repeated per item
            output = output[0] if output else {}
        value = _scalar(output.get(self.loss_key)) if isinstance(output, dict) else _scalar(output)
        if value is not None:
            self._losses.append(value)

    def _previous_rows(self, before_epoch: int) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        with open(self.log_path, newline="", encoding="utf-8") as f:
            return [
                r
                for r in csv.DictReader(f)
                if r.get("epoch", "").isdigit() and int(r["epoch"]) < before_epoch
            ]

    def _validation_columns(self, epoch: int) -> dict[str, Any]:
        ev = self.evaluator
        if ev is None or getattr(ev.state, "epoch", None) != epoch:
            return {}
        row: dict[str, Any] = {}
        for name, value in ev.state.metrics.items():
            v = _scalar(value)
            if v is not None:
                row[name] = v
        details = getattr(ev.state, "metric_details", {}) or {}
        for key, value in details.items():
            if self.detail_keys is not None and key not in self.detail_keys:
                continue
            t = torch.as_tensor(value, dtype=torch.float64)
            if t.ndim != 2:
                continue
            finite = torch.where(torch.isfinite(t), t, torch.nan)
            means = finite.nanmean(dim=0).tolist()
            names = self.class_names if self.class_names and len(self.class_names) == len(means) else None
            for i, m in enumerate(means):
                row[f"{key}_{names[i] if names else f'class{i}'}"] = m
        return row

    def _epoch_completed(self, engine) -> None:
        if _rank() != 0:
            return
        epoch = int(engine.state.epoch)
        if self._rows is None:
            self._rows = self._previous_rows(epoch)
        optimizer = getattr(engine, "optimizer", None)
        lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else math.nan
        times = getattr(engine.state, "times", {}) or {}
        row = {
            "epoch": epoch,
            "iterations": int(engine.state.iteration),
            "train_loss": sum(self._losses) / len(self._losses) if self._losses else math.nan,
            "lr": lr,
            "epoch_seconds": times.get("EPOCH_COMPLETED", math.nan),
        }
        row.update(self._validation_columns(epoch))
        self._rows = [r for r in self._rows if str(r.get("epoch")) != str(epoch)] + [row]
        columns: list[str] = []
        for r in self._rows:
            columns.extend(c for c in r if c not in columns)
        with atomic_write(self.log_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self._rows)
