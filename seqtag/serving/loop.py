"""How a worker collects a batch: waiting for requests, never polling for them.

LitServe's own batched loop (``BatchedLoop``) asks the request queue for an item every
millisecond, also while no request comes: an idle server kept 15% of a core busy (0.77 CPU
seconds in 5 idle seconds on this project's machine, against 0.02 without batching), which
the thread policy's neighbours pay for. :class:`WaitingBatchLoop` keeps everything of that
loop but the collection: it blocks on the queue until a request comes (waking once a second),
then takes more for up to ``batch_timeout`` seconds, each wait blocking until a request or the
deadline, then whatever is already queued, up to ``max_batch_size`` requests. Requests that
waited in the queue longer than ``timeout`` are answered 504 by the loop, as LitServe's own
loop answers them.
"""

from __future__ import annotations

import time
from queue import Empty, Queue
from typing import Any

from litserve.loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType

__all__ = ["WaitingBatchLoop"]

#: How long an idle worker blocks on the queue at a time (seconds).
IDLE_WAIT_S = 1.0
#: What LitServe puts in a request queue to stop a worker's loop.
STOP = (None, None, None, None)


class WaitingBatchLoop(BatchedLoop):
    """LitServe's ``BatchedLoop``, collecting each batch without polling (see the module)."""

    def get_batch_requests(
        self, lit_api: Any, request_queue: Queue, transport: Any
    ) -> tuple[list, list]:
        """Up to ``max_batch_size`` requests: ``(payloads, timed-out requests)``."""
        try:
            first = request_queue.get(timeout=IDLE_WAIT_S)
        except Empty:
            return [], []
        if first == STOP:  # LitServe's own collection stops the loop on it
            request_queue.put(first)
            return super().get_batch_requests(lit_api, request_queue, transport)
        items = [first]
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(items) < lit_api.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = request_queue.get(timeout=remaining)
                else:
                    item = request_queue.get_nowait()
            except Empty:
                break
            if item == STOP:
                request_queue.put(item)  # for the next collection, after this batch
                break
            items.append(item)
        return self._sort_out(lit_api, transport, items)

    def _sort_out(self, lit_api: Any, transport: Any, items: list) -> tuple[list, list]:
        """The requests to tag, and those that waited longer than the timeout."""
        payloads, timed_out = [], []
        limit = lit_api.request_timeout
        for response_queue_id, uid, timestamp, payload in items:
            self.put_response(  # sent only when LitServe restarts dead workers
                transport=transport,
                response_queue_id=response_queue_id,
                uid=uid,
                response_data=(),
                status=LitAPIStatus.START,
                response_type=LoopResponseType.REGULAR,
            )
            if limit not in (-1, False, None) and time.monotonic() - timestamp > limit:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, payload))
        return payloads, timed_out
