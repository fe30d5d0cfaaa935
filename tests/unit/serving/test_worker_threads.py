"""The inference workers' thread counts (seqtag.serving.threads): predict's rule, per worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqtag.runtime.threads import usable_cores
from seqtag.serving.threads import ThreadSettings, WorkerThreads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """Each test starts from torch's default count and no explicit choice."""
    before = torch.get_num_threads()
    monkeypatch.delenv("SEQTAG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_workers_share_the_cores():
    torch.set_num_threads(usable_cores())
    threads = WorkerThreads(ThreadSettings(processes=usable_cores() * 2, adapt=False))
    assert threads.start("cpu") == 1 and torch.get_num_threads() == 1
    assert threads.controller is None


def test_an_explicit_choice_is_kept(monkeypatch):
    monkeypatch.setenv("SEQTAG_THREADS", "3")
    assert WorkerThreads(ThreadSettings(processes=8)).start("cpu") == 3
    monkeypatch.delenv("SEQTAG_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    threads = WorkerThreads(ThreadSettings(processes=8))
    assert threads.start("cpu") == 2 and threads.controller is None  # left as it is


def test_a_gpu_worker_keeps_its_threads():
    torch.set_num_threads(2)
    assert WorkerThreads(ThreadSettings(processes=8)).start("cuda:0") == 2


@pytest.mark.skipif(usable_cores() < 2, reason="nothing to give back on one core")
@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the policy reads /proc/stat")
def test_the_count_adapts_only_when_asked():
    torch.set_num_threads(usable_cores())
    adapting = WorkerThreads(ThreadSettings(processes=1, adapt=True, interval_s=0.0))
    adapting.start("cpu")
    assert adapting.controller is not None  # /proc/stat is read on Linux
    adapting.check()  # the first estimate: never above the budget
    assert 1 <= torch.get_num_threads() <= usable_cores()
    fixed = WorkerThreads(ThreadSettings(processes=1, adapt=False))
    fixed.start("cpu")
    assert fixed.controller is None
