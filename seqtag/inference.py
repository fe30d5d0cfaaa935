"""Tagging outside a Trainer, and putting ``trainer.predict``'s output back in input order.

Batches are cut by length (as evaluation batches are), so their order is not the input's;
every sentence carries its input position, which both functions here use to restore the order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seqtag.data.batching import LengthBucketSampler, collate, encode_sentence

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
            for sentence in model.predict_batch(batch, confidences=True):
                results[sentence["index"]] = list(
                    zip(sentence["tags"], sentence["confidences"], strict=True)
                )
    finally:
        model.train(was_training)
    return results


def in_input_order(predictions: Iterable[Iterable[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """``trainer.predict(model, datamodule=dm)``'s batches as one list in input order.

    Each item holds ``index``, ``tokens``, ``tags`` and ``confidences`` of one sentence. With
    several processes, each returns its own share: gather them first (or use ``seqtag
    predict``, whose writer does).
    """
    sentences = [dict(sentence) for batch in predictions for sentence in batch]
    return sorted(sentences, key=lambda sentence: sentence["index"])
