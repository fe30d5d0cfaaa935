"""The tagger as a LitServe ``LitAPI``: what each inference worker process runs.

The worker is a fresh process (LitServe starts it with ``spawn``); it receives this object,
checkpoint bytes included, and :meth:`TaggerAPI.setup` builds the model from those bytes with
:meth:`SequenceTagger.load_from_checkpoint <seqtag.SequenceTagger.load_from_checkpoint>` (the
one checkpoint reader: validated, ``weights_only``), so every worker serves exactly the file
that the server read, checked and fingerprinted once at start-up, even if the file is replaced
meanwhile. Until every worker has done so, ``GET /health`` answers 503.
"""

from __future__ import annotations

import io
import json
import signal
from typing import Any

import litserve as ls
from fastapi.responses import Response

from seqtag.serving.inference import tag_requests
from seqtag.serving.loop import WaitingBatchLoop
from seqtag.serving.requests import Limits, TagRequest, parse_request
from seqtag.serving.threads import ThreadSettings, WorkerThreads

__all__ = ["TaggerAPI"]


class TaggerAPI(ls.LitAPI):
    """``POST /predict``: tags the sentences of the requests that arrive together.

    Each answer is ``{"sentences": [...], "batch_requests": N}``: per sentence the
    ``tokens``, ``tags``, ``confidences`` and ``spans`` of ``tag(spans=True)``, and ``N``, how
    many requests (this one included) were tagged together in the worker's batch.

    Args:
        checkpoint: the checkpoint file's bytes.
        limits: what one request may ask for (checked again here, as in the HTTP process).
        confidences: compute each tag's and span's probability (else ``confidences`` is
            ``null`` and spans have no ``confidence``).
        min_confidence: the span threshold of requests that set none (span models only).
        threads: how the worker chooses its thread count.
        max_batch_size: requests tagged together at most.
        batch_timeout: seconds the worker waits for more requests after a batch's first.
    """

    def __init__(
        self,
        checkpoint: bytes,
        *,
        limits: Limits,
        confidences: bool = True,
        min_confidence: float | None = None,
        threads: ThreadSettings | None = None,
        max_batch_size: int = 32,
        batch_timeout: float = 0.0,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size, batch_timeout=batch_timeout, loop=WaitingBatchLoop()
        )
        self.checkpoint = checkpoint
        self.limits = limits
        self.confidences = confidences
        self.min_confidence = min_confidence
        self.thread_settings = threads or ThreadSettings()
        self.model: Any = None
        self.threads: WorkerThreads | None = None

    def setup(self, device: str) -> None:
        """Set this worker's threads, then load the model on ``device``.

        Ctrl+C in a terminal reaches every process of the server; the worker leaves it to the
        main process, which stops the HTTP processes first and then the workers (SIGTERM).
        """
        from seqtag.training.module import SequenceTagger

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.threads = WorkerThreads(self.thread_settings)
        self.threads.start(device)
        model = SequenceTagger.load_from_checkpoint(
            io.BytesIO(self.checkpoint), map_location=device
        )
        self.model = model.eval()

    # LitServe reads the annotations of decode_request's ``request`` and of encode_response's
    # result as the endpoint's types: left unannotated, the endpoint takes the raw request
    # (checked by RequestGate) and returns a ready response.
    def decode_request(self, request, **kwargs: Any) -> TagRequest:
        """The request's JSON, checked (it passed the same check in the HTTP process)."""
        spans = bool(self.model.vocabularies.corpus_scheme)
        return parse_request(request, self.limits, spans=spans, min_confidence=self.min_confidence)

    def predict(self, x: TagRequest | list[TagRequest], **kwargs: Any) -> Any:
        """One request (``max_batch_size`` 1) or a batch of them: their answers."""
        single = isinstance(x, TagRequest)
        requests = [x] if single else list(x)
        if self.threads is not None:
            self.threads.check()
        found = tag_requests(self.model, requests, confidences=self.confidences)
        answers = [{"sentences": sentences, "batch_requests": len(requests)} for sentences in found]
        return answers[0] if single else answers

    def encode_response(self, output: dict[str, Any], **kwargs: Any):
        """The answer as a JSON response, serialised once, here."""
        body = json.dumps(output, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return Response(content=body, media_type="application/json")
