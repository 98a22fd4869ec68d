"""CPU thread settings (m2f_med.threads): one thread per usable core, shared among torchrun ranks."""

from __future__ import annotations

import pytest
import torch

from m2f_med import threads


def test_threads_follow_cores_and_processes(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.default_num_threads() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks share the cores
    assert threads.default_num_threads() == 4
    assert threads.default_num_threads(processes=16) == 1
    assert threads.default_num_threads(workers=2) == 2  # 8 cores / 2 ranks - 2 DataLoader workers
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert threads.default_num_threads(workers=9) == 1


def test_configure_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "usable_cores", lambda: 1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert threads.configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins over the default
        assert threads.configure_threads() == 2 and torch.get_num_threads() == 2
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            threads.configure_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_usable_cores_is_at_least_one():
    assert threads.usable_cores() >= 1
