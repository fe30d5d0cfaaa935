"""Reading a metric's states summed across processes after ``compute``, without a second sync.

The reports beside a metric's score (per-type span counts, skipped tokens, reliability bins) come
from the same summed states as ``compute``. Under DDP, Lightning calls ``compute`` on every rank
and then writes reports on rank zero alone: a second synchronisation there would wait forever for
the other ranks. So each metric keeps, in ``compute``, what its report needs (the snapshot), and
:func:`read_summed` returns it while it is current, and synchronises only when it is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torchmetrics import Metric

T = TypeVar("T")


def read_summed(metric: Metric, snapshot: T | None, read: Callable[[], T]) -> T:
    """``snapshot`` (what ``read`` returned inside ``compute``) while nothing was updated since;
    otherwise ``read()`` over states synchronised here, which every process must then join.

    torchmetrics keeps ``compute``'s result until the next update or reset; that is the only
    signal that the snapshot is current, and it has no public name (see
    tests/test_private_names.py).
    """
    if metric._computed is not None and snapshot is not None:
        return snapshot
    should_sync = metric.sync_on_compute and not metric._is_synced
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn, should_sync=should_sync):
        return read()
