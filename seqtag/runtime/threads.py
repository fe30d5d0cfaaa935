"""Process-level settings for runs with several processes per machine (DDP on the CPU).

Each DDP process on the CPU should use its share of the cores: two processes with two threads
each on two cores oversubscribe them, and the OpenMP threads of the RNN kernels then spend their
time waiting for each other. On this project's 2-core machine an epoch of 300 EWT sentences
(BiLSTM 1x256, 2 processes) took 2.2-2.8 s with one thread per process and 30-100 s with two.

Lightning's own process launchers already lower the thread count the same way when
``OMP_NUM_THREADS`` is unset (and then set that variable). :func:`configure_threads` states the
rule in seqtag's terms and applies it wherever the launcher did not, for example with a custom
strategy; :meth:`seqtag.SequenceTagger.setup` calls it, so the module used in your own Lightning
code gets it too.

``SEQTAG_THREADS=N`` chooses the intra-op thread count outright (it wins over
``OMP_NUM_THREADS`` for torch's kernels, and neither this share nor
:class:`seqtag.runtime.thread_policy.ThreadPolicy` changes it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator

from seqtag.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variable that fixes torch's intra-op thread count for seqtag runs.
THREADS_VARIABLE = "SEQTAG_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which ``taskset`` and cgroups narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_budget(local_processes: int, cores: int | None = None) -> int:
    """Threads per process so that ``local_processes`` processes share ``cores`` (at least 1)."""
    if local_processes < 1:
        raise ValueError(f"local_processes must be at least 1, got {local_processes}")
    return max(1, (usable_cores() if cores is None else cores) // local_processes)


def local_processes(trainer: Any) -> int:
    """Processes the trainer runs on this machine (its devices, for DDP on the CPU)."""
    count = getattr(trainer.strategy, "num_processes", None) or trainer.num_devices
    return max(1, int(count or 1))


def explicit_threads() -> int | None:
    """The thread count the user fixed: ``SEQTAG_THREADS``, else ``OMP_NUM_THREADS``.

    ``None`` when neither is set. ``OMP_NUM_THREADS`` counts as a choice even where it is not a
    single number (OpenMP also accepts lists); then it is returned as 0 ("fixed, not ours").

    Raises:
        ConfigError: ``SEQTAG_THREADS`` is not a whole number from 1 to 4096.
    """
    value = os.environ.get(THREADS_VARIABLE)
    if value is not None:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if not 1 <= count <= 4096:  # torch.set_num_threads overflows on huge counts
            raise ConfigError(
                f"{THREADS_VARIABLE} must be a whole number from 1 to 4096, got {value!r}"
            )
        return count
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp is None:
        return None
    try:
        return max(0, int(omp))
    except ValueError:
        return 0


def configure_threads(trainer: Any) -> int | None:
    """On the CPU, cap ``torch``'s intra-op threads at this process's share of the cores.

    The share is ``usable_cores() // local_processes(trainer)`` (so 2 DDP processes on 2 cores
    get 1 thread each). The count is only ever lowered, never raised, and an explicit
    ``OMP_NUM_THREADS`` in the environment is left alone.

    ``SEQTAG_THREADS=N`` sets exactly ``N`` threads instead, on any accelerator.

    Returns:
        The thread count in force after the call, or ``None`` when nothing was decided (not on
        the CPU, or ``OMP_NUM_THREADS`` is set without ``SEQTAG_THREADS``).
    """
    if THREADS_VARIABLE in os.environ:
        count = explicit_threads()
        if count is not None and torch.get_num_threads() != count:
            torch.set_num_threads(count)
        return torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ:
        return None
    if not isinstance(getattr(trainer, "accelerator", None), CPUAccelerator):
        return None
    processes = local_processes(trainer)
    budget = thread_budget(processes)
    if torch.get_num_threads() > budget:
        log.info(
            "%d processes on %d cores: using %d thread(s) per process",
            processes,
            usable_cores(),
            budget,
        )
        torch.set_num_threads(budget)
    return torch.get_num_threads()
