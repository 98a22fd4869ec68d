"""Learning-rate schedules selectable by name from a bundle config (``lr_schedule: poly | cosine``).

Both follow the Mask2Former recipe family (Cheng et al., CVPR 2022, Sec. 4: AdamW with poly decay) and
are stepped once per epoch by ``monai.handlers.LrScheduleHandler(epoch_level=True)``; their state goes into
the training checkpoint, so a resumed run continues the same curve.
"""

from __future__ import annotations

import torch
from monai.optimizers import WarmupCosineSchedule
from torch.optim.lr_scheduler import LinearLR, LRScheduler, PolynomialLR, SequentialLR

__all__ = ["SCHEDULES", "make_lr_scheduler", "refit_schedule", "schedule_horizon"]

SCHEDULES = ("poly", "cosine", "constant")


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "poly",
    total_steps: int = 100,
    warmup_steps: int = 0,
    power: float = 0.9,
) -> LRScheduler:
    """Build the learning-rate scheduler named ``schedule``.

    Args:
        optimizer: the optimizer whose learning rate is scheduled (e.g. AdamW).
        schedule: ``"poly"`` (``lr * (1 - t/T) ** power``, torch ``PolynomialLR``), ``"cosine"`` (linear warmup
            then cosine decay to 0, MONAI ``WarmupCosineSchedule``) or ``"constant"``.
        total_steps: ``T``, the number of ``scheduler.step()`` calls in the whole run (epochs when stepped
            per epoch).
        warmup_steps: steps of linear warmup from 1 % of the base rate (poly and cosine).
        power: exponent of the poly schedule.

    Returns:
        A torch ``LRScheduler``.

    Raises:
        ValueError: unknown ``schedule``, or ``total_steps < 1``, or ``warmup_steps`` outside ``[0, total_steps)``.
    """
    name = str(schedule).lower()
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {SCHEDULES}")
    total, warmup = int(total_steps), int(warmup_steps)
    if total < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    if not 0 <= warmup < total:
        raise ValueError(f"warmup_steps must be in [0, {total}); got {warmup_steps}")
    if name == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "cosine":
        return WarmupCosineSchedule(optimizer, warmup_steps=warmup, t_total=total, warmup_multiplier=0.01)
    decay = PolynomialLR(optimizer, total_iters=total - warmup, power=float(power))
    if warmup == 0:
        return decay
    ramp = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, decay], milestones=[warmup])


def _horizon(sched: LRScheduler) -> dict:
    """What fixes the length of a schedule: the attributes a checkpoint overwrites on load."""
    if isinstance(sched, SequentialLR):
        return {"milestones": list(sched._milestones), "subs": [_horizon(s) for s in sched._schedulers]}
    if isinstance(sched, PolynomialLR):
        return {"total_iters": sched.total_iters}
    if isinstance(sched, WarmupCosineSchedule):
        return {"t_total": sched.t_total, "warmup_steps": sched.warmup_steps}
    return {}


def _set_horizon(sched: LRScheduler, horizon: dict) -> None:
    if isinstance(sched, SequentialLR):
        sched._milestones = list(horizon["milestones"])
        for s, h in zip(sched._schedulers, horizon["subs"]):
            _set_horizon(s, h)
    else:
        for k, v in horizon.items():
            setattr(sched, k, v)


def _closed_form(sched: LRScheduler) -> list[float] | None:
    """Learning rates at ``sched.last_epoch`` from the formula (not the chained update), or ``None``."""
    if isinstance(sched, SequentialLR):
        idx = sum(sched.last_epoch >= m for m in sched._milestones)
        return _closed_form(sched._schedulers[idx])
    if isinstance(sched, PolynomialLR):
        t = min(sched.total_iters, max(sched.last_epoch, 0))
        return [base * (1.0 - t / sched.total_iters) ** sched.power for base in sched.base_lrs]
    if isinstance(sched, WarmupCosineSchedule):
        return [base * f(sched.last_epoch) for f, base in zip(sched.lr_lambdas, sched.base_lrs)]
    return None


def refit_schedule(sched: LRScheduler, horizon: dict) -> bool:
    """After a checkpoint was loaded into ``sched``, stretch its schedule back to ``horizon`` (taken with
    :func:`schedule_horizon` from the freshly built scheduler, i.e. this run's ``max_epochs``).

    A checkpoint stores the total steps it was built with; loading it into a run with a larger
    ``max_epochs`` would otherwise keep the old horizon, so the extra epochs run at learning rate 0 (poly,
    cosine). The schedule becomes the one this run would have had from the start, continued at the
    checkpoint's step: the optimizer's learning rates are set from the closed form at that step.

    Args:
        sched: the scheduler, with the checkpoint's state loaded.
        horizon: the horizon before loading.

    Returns:
        ``True`` if the horizon changed (and the learning rates were reset), else ``False``.
    """
    if not horizon or _horizon(sched) == horizon:
        return False
    _set_horizon(sched, horizon)
    lrs = _closed_form(sched)
    if lrs is not None:
        for group, lr in zip(sched.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = list(lrs)
    return True


def schedule_horizon(sched: LRScheduler) -> dict:
    """The horizon (total steps, warmup, milestones) of a scheduler built by :func:`make_lr_scheduler`."""
    return _horizon(sched)
