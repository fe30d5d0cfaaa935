"""Tagging outside a Trainer, and putting ``trainer.predict``'s output back in input order.

Batches are cut by length (as evaluation batches are), so their order is not the input's;
every sentence carries its input position, which both functions here use to restore the order.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from seqtag.data.batching import collate, encode_sentence
from seqtag.data.io.inputs import iter_token_lists
from seqtag.data.schemes import OUTSIDE, get_spans
from seqtag.data.streaming import inference_sampler
from seqtag.errors import ConfigError
from seqtag.models.crf.spans import SpanTags

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger


@dataclass(frozen=True)
class PredictionOptions:
    """What ``SequenceTagger.predict_step`` computes beyond the tags, as one object.

    What costs extra (CRF marginals, a pass per span) is computed only when asked for. The
    model holds one (``model.prediction_options``); :class:`~seqtag.PredictionWriter` sets it to
    what it writes, as Lightning's own tuner callbacks set the attributes they tune.

    Attributes:
        confidences: each tag's probability (with a CRF a forward-backward pass).
        spans: for span tasks, the chunks with their confidence.
        min_confidence: spans below it are dropped (span tasks only).
        uncertainty: each sentence's ``1 -`` probability of its best tag sequence.
    """

    confidences: bool = True
    spans: bool = True
    min_confidence: float | None = None
    uncertainty: bool = False


def tag_sentences(
    model: SequenceTagger,
    sentences: Sequence[Sequence[str]],
    batch_size: int,
    confidences: bool = True,
) -> list[list[tuple[str, float]]] | list[list[str]]:
    """``(tag, confidence)`` per token of each sentence, in input order (empty stay empty);
    with ``confidences=False`` the tags alone, found without the confidences' extra work (a
    CRF's forward-backward pass)."""
    vocab = model.vocabularies
    encoded = [
        encode_sentence(vocab, i, tokens) for i, tokens in enumerate(sentences) if len(tokens) > 0
    ]
    results: list[Any] = [[] for _ in sentences]
    if not encoded:
        return results
    was_training = model.training
    model.eval()
    try:
        sampler = inference_sampler([len(s.words) for s in encoded], batch_size)
        for positions in sampler:
            batch = collate([encoded[p] for p in positions])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            for sentence in predict_batch(model, batch, confidences, spans=False):
                results[sentence["index"]] = (
                    list(zip(sentence["tags"], sentence["confidences"], strict=True))
                    if confidences
                    else sentence["tags"]
                )
    finally:
        model.train(was_training)
    return results


def predict_batch(
    model: SequenceTagger,
    batch: dict[str, Any],
    confidences: bool,
    *,
    spans: bool = True,
    span_confidences: bool = True,
    min_confidence: float | None = None,
    uncertainty: bool = False,
) -> list[dict[str, Any]]:
    """Per sentence of a batch: ``index``, ``tokens``, ``tags`` (corpus scheme), ``confidences``,
    ``spans`` and ``uncertainty``; what costs extra is computed only when asked for.

    Args:
        confidences: each tag's probability (with a CRF a forward-backward pass); else ``None``.
        spans: for span tasks, the chunks of the predicted tags as ``{"start", "end"
            (exclusive), "type", "confidence"}`` dicts (:meth:`Tagger.span_confidence`: exact
            with a CRF, a per-token product with softmax); ``None`` for POS-style tags or
            when not asked for.
        span_confidences: whether the spans carry their ``confidence``; without it they are
            ``{"start", "end", "type"}`` and cost nothing beyond the tags (with a CRF the
            exact confidence is two forward passes per span). ``min_confidence`` still
            computes them to drop spans, but they are left out of the answer.
        min_confidence: spans below it are dropped, from ``spans`` and from the tags (their
            tokens become ``O``, with the probability of ``O`` as their confidence); span
            tasks only.
        uncertainty: ``1 -`` the probability of the best tag sequence (of the model's
            prediction, before any span is dropped), for choosing what to annotate; else
            ``None``.
    """
    vocab = model.vocabularies
    with_spans = bool(vocab.corpus_scheme) and (spans or min_confidence is not None)
    if min_confidence is not None and not vocab.corpus_scheme:
        raise ConfigError(NO_SPANS_FOR_MIN_CONFIDENCE)
    if "words" not in batch:  # sentences without tokens (an empty JSON Lines record)
        return [
            {
                "index": index,
                "tokens": [],
                "tags": [],
                "confidences": [] if confidences else None,
                "spans": [] if with_spans else None,
                "uncertainty": 0.0 if uncertainty else None,
            }
            for index in batch["index"].tolist()
        ]
    emissions, mask, lengths = model(batch), batch["mask"], batch["lengths"]
    if confidences:
        best, confidence = model.tagger.decode(emissions, mask)
    else:
        best, confidence = model.tagger.predict(emissions, mask), None
    found: list[list[dict[str, Any]] | None] = [None] * len(best)
    if with_spans:
        scored = span_confidences or min_confidence is not None
        found = _spans(model, emissions, mask, best, lengths, scored)
        if min_confidence is not None:
            found = _drop_spans(model, emissions, mask, best, confidence, found, min_confidence)
        if scored and not span_confidences:
            found = [[_unscored(span) for span in sentence] for sentence in found]
    rows: list[Any] = confidence.float().tolist() if confidence is not None else [None] * len(best)
    doubt: list[Any] = [None] * len(best)
    if uncertainty:
        probability = model.tagger.best_path_probability(emissions, mask).float()
        doubt = (1.0 - probability).clamp(min=0.0).tolist()
    tags = model.to_corpus_tags(best, lengths)
    tokens = batch.get("tokens") or [None] * len(tags)
    return [
        {
            "index": index,
            "tokens": list(words) if words is not None else None,
            "tags": sentence_tags,
            "confidences": row[: len(sentence_tags)] if row is not None else None,
            "spans": sentence_spans,
            "uncertainty": sentence_doubt,
        }
        for index, words, sentence_tags, row, sentence_spans, sentence_doubt in zip(
            batch["index"].tolist(), tokens, tags, rows, found, doubt, strict=True
        )
    ]


#: The error for ``min_confidence`` with a model whose tags are not chunks.
NO_SPANS_FOR_MIN_CONFIDENCE = (
    "prediction.min_confidence drops low-confidence spans, but this model tags no spans (it "
    "was trained without data.tag_scheme, e.g. for POS tags): leave it unset"
)


@functools.lru_cache(maxsize=8)
def _span_tags(tags: tuple[str, ...], scheme: str) -> SpanTags:
    """The :class:`SpanTags` of a tag set, built once per model (batches ask for it again)."""
    return SpanTags(tags, scheme)


def _unscored(span: dict[str, Any]) -> dict[str, Any]:
    """A span without its ``confidence`` (computed only to drop unsure spans)."""
    return {key: value for key, value in span.items() if key != "confidence"}


def _spans(
    model: SequenceTagger,
    emissions: Tensor,
    mask: Tensor,
    best: Tensor,
    lengths: Tensor,
    scored: bool = True,
) -> list[list[dict[str, Any]]]:
    """The chunks of each row's best tags, with their confidence (``scored``) computed in one
    call for the batch."""
    vocab = model.vocabularies
    span_tags = _span_tags(tuple(vocab.tags), vocab.tag_scheme)
    ids = best.tolist()
    found = [
        get_spans(vocab.tags.decode(row[:n]), vocab.tag_scheme)
        for row, n in zip(ids, lengths.tolist(), strict=True)
    ]
    if not scored:
        return [
            [{"start": start, "end": end, "type": type_} for type_, start, end in sentence]
            for sentence in found
        ]
    flat = [(row, span) for row, sentence in enumerate(found) for span in sentence]
    if not flat:
        return [[] for _ in found]
    encoded = span_tags.encode(flat, device=emissions.device)
    scores = iter(model.tagger.span_confidence(emissions, mask, encoded, span_tags).tolist())
    return [
        [
            {"start": start, "end": end, "type": type_, "confidence": next(scores)}
            for type_, start, end in sentence
        ]
        for sentence in found
    ]


def _drop_spans(
    model: SequenceTagger,
    emissions: Tensor,
    mask: Tensor,
    best: Tensor,
    confidence: Tensor | None,
    found: list[list[dict[str, Any]]],
    min_confidence: float,
) -> list[list[dict[str, Any]]]:
    """``found`` without the spans below ``min_confidence``, whose tokens become ``O`` in
    ``best`` (in place; and their ``confidence`` the probability of ``O``).

    Spans survive it: a chunk starts where its first tag opens one after ``O`` as well as
    after another chunk, and ends where ``O`` follows as well as another chunk.
    """
    dropped = [
        (row, span["start"], span["end"])
        for row, sentence in enumerate(found)
        for span in sentence
        if span["confidence"] < min_confidence
    ]
    if not dropped:
        return found
    outside = model.vocabularies.tags.lookup(OUTSIDE)
    if outside is None:
        raise ConfigError(
            f"prediction.min_confidence turns dropped spans into {OUTSIDE!r}, a tag this model "
            "does not have"
        )
    probability_o = None
    if confidence is not None:
        probability_o = model.tagger.token_probabilities(emissions, mask)[..., outside]
    for row, start, end in dropped:
        best[row, start:end] = outside
        if confidence is not None:
            confidence[row, start:end] = probability_o[row, start:end]
    return [[s for s in sentence if s["confidence"] >= min_confidence] for sentence in found]


def tag_stream(
    model: SequenceTagger,
    sentences: Iterable[Sequence[str]] | Iterable[str],
    batch_size: int,
    chunk_size: int,
    confidences: bool = True,
) -> Iterator[list[tuple[str, float]]] | Iterator[list[str]]:
    """``(tag, confidence)`` lists (tag lists with ``confidences=False``), one per sentence, in
    input order, ``chunk_size`` at a time.

    Reads ``chunk_size`` sentences, tags them in length-sorted batches, yields their results
    and only then reads on: memory is bounded by the chunk, whatever the input's length. The
    input is checked as ``tag()`` checks it, by the same reader
    (:func:`~seqtag.data.io.inputs.iter_token_lists`), so ``chunk_size`` never changes what is
    accepted: ``["The", "cat", "sat"]`` is one sentence's flat token list, refused, even when
    read one string at a time.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    token_lists = iter_token_lists(sentences)
    while block := list(itertools.islice(token_lists, chunk_size)):
        yield from tag_sentences(model, block, batch_size, confidences)


def in_input_order(predictions: Iterable[Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """``trainer.predict(model, datamodule=dm)``'s batches as one list in input order.

    Each item holds ``index``, ``tokens``, ``tags`` and ``confidences`` of one sentence. With
    several processes, each returns its own share: gather them first (or use ``seqtag
    predict``, whose writer does).
    """
    sentences = [dict(sentence) for batch in predictions for sentence in batch]
    return sorted(sentences, key=lambda sentence: sentence["index"])
