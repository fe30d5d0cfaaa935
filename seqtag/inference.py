"""Tagging outside a Trainer, and putting ``trainer.predict``'s output back in input order.

Batches are cut by length (as evaluation batches are), so their order is not the input's;
every sentence carries its input position, which both functions here use to restore the order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seqtag.data.batching import LengthBucketSampler, collate, encode_sentence
from seqtag.data.inputs import as_token_lists

if TYPE_CHECKING:
    from seqtag.module import SequenceTagger


def tag_sentences(
    model: SequenceTagger, sentences: Sequence[Sequence[str]], batch_size: int
) -> list[list[tuple[str, float]]]:
    """``(tag, confidence)`` per token of each sentence, in input order (empty stay empty)."""
    vocab = model.vocabularies
    encoded = [
        encode_sentence(vocab, i, tokens) for i, tokens in enumerate(sentences) if len(tokens) > 0
    ]
    results: list[list[tuple[str, float]]] = [[] for _ in sentences]
    if not encoded:
        return results
    was_training = model.training
    model.eval()
    try:
        sampler = LengthBucketSampler(
            [len(s.words) for s in encoded], batch_size, shuffle=False, num_replicas=1, rank=0
        )
        for positions in sampler:
            batch = collate([encoded[p] for p in positions])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            for sentence in predict_batch(model, batch, confidences=True):
                results[sentence["index"]] = list(
                    zip(sentence["tags"], sentence["confidences"], strict=True)
                )
    finally:
        model.train(was_training)
    return results


def predict_batch(
    model: SequenceTagger, batch: dict[str, Any], confidences: bool
) -> list[dict[str, Any]]:
    """Per sentence of a batch: ``index``, ``tokens``, ``tags`` (corpus scheme), ``confidences``.

    Confidences are ``None`` unless asked for (with a CRF they cost a forward-backward pass).
    """
    if "words" not in batch:  # sentences without tokens (an empty JSON Lines record)
        return [
            {"index": index, "tokens": [], "tags": [], "confidences": []}
            for index in batch["index"].tolist()
        ]
    emissions = model(batch)
    if confidences:
        best, confidence = model.tagger.decode(emissions, batch["mask"])
        rows: list[Any] = confidence.float().tolist()
    else:
        best = model.tagger.predict(emissions, batch["mask"])
        rows = [None] * len(best)
    tags = model.to_corpus_tags(best, batch["lengths"])
    tokens = batch.get("tokens") or [None] * len(tags)
    return [
        {
            "index": index,
            "tokens": list(words) if words is not None else None,
            "tags": sentence_tags,
            "confidences": row[: len(sentence_tags)] if row is not None else None,
        }
        for index, words, sentence_tags, row in zip(
            batch["index"].tolist(), tokens, tags, rows, strict=True
        )
    ]


def tag_stream(
    model: SequenceTagger,
    sentences: Iterable[Sequence[str]] | Iterable[str],
    batch_size: int,
    chunk_size: int,
) -> Iterator[list[tuple[str, float]]]:
    """``(tag, confidence)`` lists, one per sentence, in input order, ``chunk_size`` at a time.

    Reads ``chunk_size`` sentences, tags them in length-sorted batches, yields their results
    and only then reads on: memory is bounded by the chunk, whatever the input's length.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if isinstance(sentences, (str, bytes)):
        as_token_lists(sentences)  # raises the documented TypeError
    iterator = iter(sentences)
    while block := list(itertools.islice(iterator, chunk_size)):
        yield from tag_sentences(model, as_token_lists(block), batch_size)


def in_input_order(predictions: Iterable[Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """``trainer.predict(model, datamodule=dm)``'s batches as one list in input order.

    Each item holds ``index``, ``tokens``, ``tags`` and ``confidences`` of one sentence. With
    several processes, each returns its own share: gather them first (or use ``seqtag
    predict``, whose writer does).
    """
    sentences = [dict(sentence) for batch in predictions for sentence in batch]
    return sorted(sentences, key=lambda sentence: sentence["index"])
