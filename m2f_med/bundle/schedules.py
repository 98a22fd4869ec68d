"""Learning-rate schedules selectable by name from a bundle config (``lr_schedule: poly | cosine``).

Both follow the Mask2Former recipe family (Cheng et al., CVPR 2022, Sec. 4: AdamW with poly decay) and
are stepped once per epoch by ``monai.handlers.LrScheduleHandler(epoch_level=True)``; their state goes into
the training checkpoint, so a resumed run continues the same curve.
"""

from __future__ import annotations

import torch
from monai.optimizers import WarmupCosineSchedule
from torch.optim.lr_scheduler import LinearLR, LRScheduler, PolynomialLR, SequentialLR

__all__ = ["SCHEDULES", "make_lr_scheduler"]

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
