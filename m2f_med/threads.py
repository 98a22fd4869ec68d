"""CPU thread settings: one intra-op thread per usable core, shared among the processes of a run.

Why this matters (measured on 2 shared cores, ``docs/performance.md``): PyTorch's OpenMP threads spin while
they wait for each other. When the cores are also busy with other work (another process, DataLoader
workers, a second torchrun rank) a spinning thread holds a core that the thread it waits for needs, and
a Mask2Former forward pass became 8x slower with 2 threads than with 1 (2.6 s against 0.31 s for four
352² slices). Two rules avoid it:

* ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) unless the user set it. OpenMP reads it when torch is
  first imported, so :func:`prepare_environment` must run before ``import torch``; the ``m2f-med`` command
  does that (it imports torch only when a command needs it).
* never more threads than cores: the usable cores (CPU affinity and a cgroup quota, e.g. in a container)
  divided by the processes that share them (``LOCAL_WORLD_SIZE`` under torchrun).

This module imports torch only inside :func:`configure_threads`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

__all__ = ["usable_cores", "default_num_threads", "prepare_environment", "configure_threads"]


def _cgroup_quota() -> float | None:
    """CPU quota of a cgroup-v2 container in cores (``/sys/fs/cgroup/cpu.max``), ``None`` if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity (``os.sched_getaffinity``), capped by a cgroup quota; >= 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def default_num_threads(processes: int | None = None, workers: int = 0) -> int:
    """Intra-op threads per process: ``usable_cores() // processes - workers`` (at least 1).

    Args:
        processes: processes sharing the cores; ``None`` = ``LOCAL_WORLD_SIZE`` (set by torchrun) or 1.
        workers: DataLoader worker processes of each of them (one thread each, busy while they augment).
    """
    if processes is None:
        try:
            processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except ValueError:
            processes = 1
    return max(1, usable_cores() // max(1, int(processes)) - max(0, int(workers)))


def prepare_environment() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; effective only before ``import torch``."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure_threads(num_threads: int | None = None, workers: int = 0) -> int:
    """Set torch's intra-op threads (``torch.set_num_threads``) and return the number set.

    Args:
        num_threads: threads to use; ``None`` or ``0`` = ``OMP_NUM_THREADS`` if the user set it, else
            :func:`default_num_threads`.
        workers: DataLoader workers per process, left their cores (see :func:`default_num_threads`).

    Raises:
        ValueError: ``num_threads`` is negative.

    Note:
        DataLoader worker processes run with one thread each (PyTorch sets that in every worker) and keep
        their cores busy while they augment, hence ``workers``.
    """
    if num_threads is not None and int(num_threads) < 0:
        raise ValueError(f"num_threads must be >= 0; got {num_threads}")
    if not num_threads:
        env = os.environ.get("OMP_NUM_THREADS", "")
        num_threads = int(env) if env.isdigit() and int(env) > 0 else default_num_threads(workers=workers)
    import torch

    torch.set_num_threads(int(num_threads))
    return int(num_threads)


def torch_imported() -> bool:
    """Whether torch is already imported (then :func:`prepare_environment` comes too late for OpenMP)."""
    return "torch" in sys.modules
