"""Tagging the sentences of several requests together: seqtag's own inference path.

LitServe hands the worker the requests that arrived together (up to ``max_batch_size``
within ``batch_timeout``). Their sentences are pooled and cut into forward passes exactly as
``tag()`` and ``seqtag predict`` cut theirs (:func:`~seqtag.data.streaming.inference_sampler`:
sorted by length, at most 256 sentences and 2,048 padded tokens a pass), and each pass goes
through :func:`~seqtag.prediction.inference.predict_batch`, the function behind
``tag(spans=True)`` and ``trainer.predict``: so an answer is ``tag(spans=True)``'s dict for the
sentence (without its ``index``), and a long request is split into passes that cannot pad
the short sentences of the others. Requests with different ``min_confidence`` thresholds are
tagged in separate passes, since the threshold changes the tags.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from seqtag.data.batching import collate, encode_sentence
from seqtag.data.streaming import DEFAULT_PREDICT_MAX_TOKENS, inference_sampler
from seqtag.prediction.inference import predict_batch
from seqtag.serving.requests import TagRequest

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger

__all__ = ["ANSWER_FIELDS", "BATCH_SENTENCES", "tag_requests"]

#: Sentences per forward pass at most, as ``tag()``'s default ``batch_size``.
BATCH_SENTENCES = 256
#: What an answer holds for each sentence (``tag(spans=True)``'s dict without its ``index``
#: and ``uncertainty``).
ANSWER_FIELDS = ("tokens", "tags", "confidences", "spans")


def tag_requests(
    model: SequenceTagger,
    requests: Sequence[TagRequest],
    *,
    confidences: bool = True,
    batch_size: int = BATCH_SENTENCES,
    max_tokens: int = DEFAULT_PREDICT_MAX_TOKENS,
) -> list[list[dict[str, Any]]]:
    """Each request's answers, one dict per sentence in its order (see the module docstring).

    Args:
        model: the loaded tagger, in eval mode, on its device.
        requests: checked requests (:func:`~seqtag.serving.requests.parse_request`).
        confidences: each tag's and each span's probability (with a CRF a forward-backward
            pass, and two forward passes per span); else the ``confidences`` fields are
            ``None`` and spans have no ``confidence``, as ``tag(spans=True,
            confidences=False)`` gives them.
        batch_size: sentences per forward pass at most.
        max_tokens: padded tokens per forward pass at most.
    """
    with_spans = bool(model.vocabularies.corpus_scheme)
    empty = {
        "tokens": [],
        "tags": [],
        "confidences": [] if confidences else None,
        "spans": [] if with_spans else None,
    }
    answers: list[list[dict[str, Any]]] = [
        [dict(empty) for _ in request.sentences] for request in requests
    ]
    groups: dict[float | None, list[tuple[int, int, list[str]]]] = defaultdict(list)
    for number, request in enumerate(requests):
        for position, tokens in enumerate(request.sentences):
            if tokens:
                groups[request.min_confidence].append((number, position, tokens))
    with torch.inference_mode():
        for threshold, members in groups.items():
            encoded = [
                encode_sentence(model.vocabularies, index, tokens, keep_tokens=True)
                for index, (_, _, tokens) in enumerate(members)
            ]
            lengths = [len(sentence.words) for sentence in encoded]
            for positions in inference_sampler(lengths, batch_size, max_tokens):
                batch = collate([encoded[p] for p in positions]).to(model.device)
                found = predict_batch(
                    model,
                    batch,
                    confidences,
                    spans=True,
                    span_confidences=confidences,
                    min_confidence=threshold,
                )
                for sentence in found:
                    number, position, _ = members[sentence["index"]]
                    answers[number][position] = {key: sentence[key] for key in ANSWER_FIELDS}
    return answers
