"""Checkpoints for bundle training: atomic saving and finding the checkpoint to resume from.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``, to keep group-read permission); a run killed
mid-save then leaves a truncated ``model.pt`` that looks complete. ignite's atomic mode writes a temporary
file in the same folder, renames it and restores group/other read permission, so we switch it on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from monai.handlers import CheckpointLoader, CheckpointSaver

__all__ = ["AtomicCheckpointSaver", "ResumeCheckpointLoader", "latest_checkpoint", "resume_checkpoint", "CHECKPOINT_PATTERN"]

# ignite's name for interval checkpoints of several objects: "{prefix}_checkpoint_epoch={n}.pt"
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written atomically (temp file, then rename).

    Takes exactly the arguments of ``CheckpointSaver`` (``save_dir``, ``save_dict``, ``save_key_metric``,
    ``key_metric_filename``, ``save_interval``, ``n_saved``, ...). With one object in ``save_dict`` the
    file holds that object's ``state_dict()`` directly (ignite ``Checkpoint``), e.g. ``models/model.pt`` is
    a plain network state dict loadable with ``torch.load(path, weights_only=True)``. Distributed runs save
    on rank 0 only and unwrap ``DistributedDataParallel``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if checkpoint is not None:
                # ignite DiskSaver: write to a NamedTemporaryFile in the folder, os.replace, chmod g+r o+r
                checkpoint.save_handler._atomic = True

    def state_dict(self) -> dict:
        """The best-metric tracking list (score and file of the best model), ``{}`` without a key metric.

        Saved inside the training checkpoint so that a resumed run only replaces ``model.pt`` with a model
        that beats the best one before the interruption (restored by ``CheckpointSaver.load_state_dict``).
        """
        if self._key_metric_checkpoint is None:
            return {}
        return self._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the best-metric tracking list written by :meth:`state_dict` (empty: nothing to restore)."""
        if state_dict:
            super().load_state_dict(state_dict)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The interval checkpoint with the highest epoch in ``ckpt_dir`` (``*checkpoint_epoch=N.pt``), or ``None``."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.search(p.name))]
    return max(found)[1] if found else None


def _as_flag(value: object) -> bool | None:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "latest"):
        return True
    if text in ("false", "0", "no", "none", ""):
        return False
    return None


def resume_checkpoint(ckpt_dir: str | os.PathLike, resume: object) -> str | None:
    """Which checkpoint a training run resumes from.

    Args:
        ckpt_dir: folder of the interval checkpoints (the bundle's ``ckpt_dir``).
        resume: ``False``/``"false"``/``None``: start fresh; ``True``/``"true"``/``"latest"``: the latest
            checkpoint in ``ckpt_dir``; any other string: that checkpoint file. Strings are accepted because
            ``python -m monai.bundle run --resume true`` passes the text ``"true"``.

    Returns:
        The checkpoint path as a string, or ``None`` to start fresh.

    Raises:
        FileNotFoundError: resuming was asked for but there is no checkpoint (names the folder or file).
    """
    flag = _as_flag(resume)
    if flag is False:
        return None
    if flag is True:
        found = latest_checkpoint(ckpt_dir)
        if found is None:
            raise FileNotFoundError(
                f"{ckpt_dir}: resume requested but no 'checkpoint_epoch=N.pt' found there; "
                "train without --resume first, or pass --resume <checkpoint file>"
            )
        return str(found)
    path = Path(str(resume))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: resume checkpoint not found")
    return str(path)


class ResumeCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` that keeps this run's learning-rate schedule on resume.

    Same arguments as ``CheckpointLoader``. The ``lr_scheduler`` in ``load_dict`` was built for this run's
    ``max_epochs``; loading the checkpoint overwrites its horizon with the interrupted run's. When they
    differ (``--resume true --max_epochs 300`` after a 200-epoch run) the horizon is set back and the
    learning rate taken from the schedule at the checkpoint's epoch
    (:func:`m2f_med.bundle.schedules.refit_schedule`), so the extra epochs are trained, not run at
    learning rate 0. A ``max_epochs`` below the checkpoint's epoch is refused by MONAI's loader
    (``ValueError``).
    """

    def __call__(self, engine) -> None:
        from m2f_med.bundle.schedules import refit_schedule, schedule_horizon

        sched = self.load_dict.get("lr_scheduler")
        horizon = schedule_horizon(sched) if sched is not None else {}
        super().__call__(engine)
        if sched is not None and refit_schedule(sched, horizon):
            self.logger.warning(
                "resume: the checkpoint's learning-rate schedule was built for another max_epochs; continuing "
                "this run's schedule (max_epochs %s) at epoch %s, lr %s",
                engine.state.max_epochs, engine.state.epoch, [g["lr"] for g in sched.optimizer.param_groups],
            )
