"""Intra-op threads of the inference workers: the rule of ``seqtag predict``, without a Trainer.

A worker process starts with torch's default of one thread per core, and ``--workers N``
processes would each take every core. As for DDP processes on the CPU
(:func:`seqtag.runtime.threads.configure_threads`), each worker caps its threads at its share
of the cores (``cores // workers``); ``SEQTAG_THREADS`` sets the count outright and
``OMP_NUM_THREADS`` leaves it alone. Then, as :class:`seqtag.runtime.thread_policy.ThreadPolicy`
does between batches, the count gives way while other processes keep cores busy (the server's
own HTTP processes among them), checked before each batch of requests at most every
``interval_s`` seconds, and never raised above the share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from seqtag.runtime.thread_policy import ThreadController
from seqtag.runtime.threads import THREADS_VARIABLE, explicit_threads, thread_budget, usable_cores

__all__ = ["ThreadSettings", "WorkerThreads"]


@dataclass(frozen=True)
class ThreadSettings:
    """How the workers choose their thread counts.

    Attributes:
        processes: inference processes sharing this machine's cores.
        adapt: lower the count while other processes are busy (``--threads.enabled``; off in
            a deterministic run, whose results must not depend on the machine's load).
        interval_s: the shortest time between two checks (``--threads.interval_s``).
    """

    processes: int = 1
    adapt: bool = True
    interval_s: float = 2.0


class WorkerThreads:
    """One worker's thread count: set in :meth:`start`, adapted in :meth:`check`."""

    def __init__(self, settings: ThreadSettings) -> None:
        self.settings = settings
        self.controller: ThreadController | None = None

    def start(self, device: str) -> int:
        """Set this worker's thread count for ``device``; the count in force."""
        if THREADS_VARIABLE in os.environ:
            count = explicit_threads()
            if count is not None:
                torch.set_num_threads(count)
            return torch.get_num_threads()
        if explicit_threads() is not None or not str(device).startswith("cpu"):
            return torch.get_num_threads()  # OMP_NUM_THREADS, or a GPU: left as they are
        budget = thread_budget(self.settings.processes)
        if torch.get_num_threads() > budget:
            torch.set_num_threads(budget)
        budget = torch.get_num_threads()
        if self.settings.adapt and budget > 1:
            controller = ThreadController(budget, usable_cores())
            controller.start()
            if controller.seconds_since_sample() is not None:  # /proc/stat is readable
                self.controller = controller
        return budget

    def check(self) -> None:
        """Before a batch: re-estimate other processes' load, at most every ``interval_s``."""
        controller = self.controller
        if controller is None:
            return
        controller.adapt(self.settings.interval_s)
