"""Intra-op threads that give way to other busy processes on the machine.

A training step spreads each kernel over ``torch.get_num_threads()`` threads and waits for the
slowest. When another process keeps one of the cores busy, one of those threads only runs part
of the time and every step waits for it: on a 2-core machine next to one busy process a step
with 2 threads took 98 ms against 29 ms on an idle machine, and 43 ms with 1 thread; two
``seqtag fit`` runs at once with 2 threads each ran 3.2x slower than alone.

:class:`ThreadPolicy` (a Lightning callback, on by default in the ``seqtag`` command) therefore
measures how much CPU time *other* processes use on the cores this process may run on, and
uses ``max(1, min(budget, cores - round(others)))`` threads, where ``budget`` is what seqtag
uses anyway (the thread count in force at setup, capped by :func:`seqtag.runtime.threads.
configure_threads` at this process's share of the cores under DDP). The count is only ever
lowered below the budget, never raised above it; an idle machine keeps the budget.

The estimate is ``busy time of the usable cores (/proc/stat) - this process's own CPU time``
over the last window, re-evaluated at most every ``interval_s`` seconds from the batch hooks
(two small file reads). A new count is applied only once two checks in a row agree on it, so a
brief burst elsewhere does not make the count flap. Without ``/proc/stat`` (macOS, Windows)
the policy does nothing.

An explicit choice is never overridden: with ``SEQTAG_THREADS`` or ``OMP_NUM_THREADS`` set,
the thread count stays what those say (see :func:`seqtag.runtime.threads.explicit_threads`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback

from seqtag.errors import ConfigError
from seqtag.options import NonNegativeFloat, check_ranges
from seqtag.runtime.threads import configure_threads, explicit_threads, usable_cores

log = logging.getLogger(__name__)

__all__ = ["CpuTimes", "ThreadController", "ThreadPolicy", "read_cpu_times", "threads_for"]

#: Checks in a row that must agree on a new thread count before it is applied.
CONFIRMATIONS = 2
#: Shortest window for the first estimate (from setup to the first batch), in seconds.
FIRST_WINDOW_S = 0.1


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU seconds: all processes on the usable cores, and this process alone."""

    busy: float
    own: float


Reader = Callable[[], "CpuTimes | None"]


def _usable_cpu_ids() -> set[int] | None:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return None


def read_cpu_times(
    stat: Path = Path("/proc/stat"), cpus: set[int] | None = None
) -> CpuTimes | None:
    """Busy seconds of the cores in ``cpus`` (default: this process's affinity) and our own.

    Busy is every ``/proc/stat`` column but ``idle`` and ``iowait`` (``guest`` time is already
    part of ``user``, so the guest columns are left out). ``None`` where ``/proc/stat`` cannot
    be read or parsed.
    """
    try:
        text = stat.read_text()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    cpus = _usable_cpu_ids() if cpus is None else cpus
    busy = 0
    found = False
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
            values = [int(v) for v in fields[:8]]
        except ValueError:
            continue
        if (cpus is not None and cpu not in cpus) or len(values) < 5:
            continue
        busy += sum(values) - values[3] - values[4]  # all but idle and iowait
        found = True
    if not found:
        return None
    own = os.times()
    return CpuTimes(busy=busy / ticks, own=own.user + own.system)


def threads_for(budget: int, cores: int, others_busy: float) -> int:
    """Threads to use when other processes keep ``others_busy`` of ``cores`` cores busy.

    A core counts as taken from half a core's use upwards: a core that another process uses
    most of the time stalls every step of ours that waits for a thread on it.
    """
    taken = math.floor(max(0.0, others_busy) + 0.5)
    return max(1, min(budget, cores - taken))


class ThreadController:
    """The policy without Lightning: estimates other processes' load, picks a thread count.

    Args:
        budget: the most threads to use (what an idle machine gets).
        cores: the cores this process may run on.
        reader: cumulative CPU times, or ``None`` where they cannot be read (then the
            controller never changes anything).
        clock: wall-clock seconds (monotonic).
        confirmations: checks in a row that must agree on a new count before it applies (the
            first estimate applies at once).
    """

    def __init__(
        self,
        budget: int,
        cores: int,
        reader: Reader = read_cpu_times,
        clock: Callable[[], float] = time.monotonic,
        confirmations: int = CONFIRMATIONS,
    ) -> None:
        self.budget = max(1, budget)
        self.cores = max(1, cores)
        self.reader = reader
        self.clock = clock
        self.confirmations = max(1, confirmations)
        self.threads = self.budget
        self.others_busy: float | None = None
        self._last: tuple[float, CpuTimes] | None = None
        self._pending: tuple[int, int] | None = None  # (count, checks in a row that chose it)
        self.decided = False  # whether the first estimate has been made

    def start(self) -> None:
        """Begin the first measurement window."""
        times = self.reader()
        self._last = None if times is None else (self.clock(), times)

    def seconds_since_sample(self) -> float | None:
        return None if self._last is None else self.clock() - self._last[0]

    def update(self) -> int | None:
        """Close the current window; return a new thread count to apply, or ``None``."""
        if self._last is None:
            return None
        times = self.reader()
        now = self.clock()
        if times is None:
            return None
        then, before = self._last
        self._last = (now, times)
        wall = now - then
        if wall <= 0:
            return None
        others = ((times.busy - before.busy) - (times.own - before.own)) / wall
        self.others_busy = max(0.0, others)
        target = threads_for(self.budget, self.cores, self.others_busy)
        if not self.decided:
            self.decided = True
            return self._apply(target)
        if target == self.threads:
            self._pending = None
            return None
        count = self._pending[1] + 1 if self._pending and self._pending[0] == target else 1
        self._pending = (target, count)
        if count < self.confirmations:
            return None
        return self._apply(target)

    def adapt(self, interval_s: float) -> None:
        """Once ``interval_s`` has passed since the last sample (a shorter first window),
        re-estimate the other processes' load and set torch's intra-op threads to match: what a
        trainer does before each batch, and a server worker before each batch it tags."""
        elapsed = self.seconds_since_sample()
        wait = interval_s if self.decided else min(interval_s, FIRST_WINDOW_S)
        if elapsed is None or elapsed < wait:
            return
        threads = self.update()
        if threads is not None:
            log.debug(
                "other processes use %.1f of %d cores: %d intra-op thread(s)",
                self.others_busy or 0.0,
                self.cores,
                threads,
            )
            torch.set_num_threads(threads)

    def _apply(self, target: int) -> int | None:
        self._pending = None
        if target == self.threads:
            return None
        self.threads = target
        return target


class ThreadPolicy(Callback):
    """Lower torch's intra-op threads while other processes keep cores of this machine busy.

    Next to one busy process on 2 cores a run uses 1 thread instead of 2; on an idle machine it
    keeps the thread count it would have anyway. Re-evaluated at most every ``interval_s``
    seconds during training, validation, test and prediction batches; a new count applies once
    two checks in a row agree on it. At the end of each stage the thread count goes back to
    what it was at setup (capped under CPU DDP at the process's share of the cores).

    Only on the CPU accelerator, and never with ``SEQTAG_THREADS`` or ``OMP_NUM_THREADS`` set
    (an explicit choice is kept as it is), where ``/proc/stat`` is missing, or in a
    deterministic run (``Trainer(deterministic=True)``, which turns on torch's deterministic
    algorithms): matrix products of realistic size round differently with 1 and 2 threads, so a
    load-dependent thread count would make results depend on what else the machine ran.

    Args:
        enabled: adapt the thread count; ``False`` leaves it fixed.
        interval_s: the shortest time between two checks, in seconds.
    """

    #: Where CPU times come from (replaceable, e.g. in tests).
    reader: Reader = staticmethod(read_cpu_times)
    #: Wall clock of the checks (replaceable, e.g. in tests).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, enabled: bool = True, interval_s: NonNegativeFloat = 2.0) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError(f"threads.enabled must be true or false, got {enabled!r}")
        check_ranges("threads", ThreadPolicy.__init__, locals())
        self.enabled = enabled
        self.interval_s = float(interval_s)
        self.controller: ThreadController | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.controller = None
        if not self.enabled or explicit_threads() is not None:
            return
        if torch.are_deterministic_algorithms_enabled():
            return  # results must not depend on the machine's load
        if not isinstance(getattr(trainer, "accelerator", None), CPUAccelerator):
            return
        configure_threads(trainer)  # the budget: the DDP share, or what the user chose
        budget = torch.get_num_threads()
        if budget <= 1:
            return  # nothing to give away
        controller = ThreadController(budget, usable_cores(), self.reader, self.clock)
        controller.start()
        if controller.seconds_since_sample() is not None:
            self.controller = controller

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()  # Lightning skips teardown hooks when a stage fails

    def _restore(self) -> None:
        """Back to the budget, so the process after the run has the threads it had before."""
        if self.controller is not None:
            torch.set_num_threads(self.controller.budget)
            self.controller = None

    def _check(self) -> None:
        controller = self.controller
        if controller is None:
            return
        controller.adapt(self.interval_s)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check()

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check()

    def on_test_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check()

    def on_predict_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check()
