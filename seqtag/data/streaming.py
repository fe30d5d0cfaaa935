"""Text to tag, read lazily in chunks: bounded memory on corpora of any size.

``seqtag predict`` never holds the whole input. :class:`PredictionStream` reads a fixed number
of sentences at a time (a *chunk*), batches them by length (so padding stays low, as in
evaluation), and yields the batches with every sentence's position in the input. Chunk ``c``
belongs to process ``c % world_size``, so several processes share the work without talking
to each other, and each writes its chunks in order (see :mod:`seqtag.prediction.output`). Peak
memory is set by the chunk size, not by the input's size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from seqtag.data.batching import collate, encode_sentence
from seqtag.data.io.formats import Sentence
from seqtag.data.sampling import LengthBucketSampler, world
from seqtag.data.vocab import Vocabularies

#: Sentences per chunk unless configured (``data.predict_chunk_size``): batches are cut from a
#: chunk sorted by length, so a small chunk pads more and cuts more, smaller batches (EWT's
#: text in chunks of 1,024: 91% real tokens, 57 sentences a batch; of 8,192: 98%, 107), while
#: a chunk's Python objects stay a small share of the memory ("Measurements behind the
#: defaults" in benchmarks/README.md).
DEFAULT_CHUNK_SIZE = 8192
#: Padded tokens per prediction batch unless configured (``data.predict_max_tokens``): bounds
#: the activations of a batch of long sentences.
DEFAULT_PREDICT_MAX_TOKENS = 2048


def inference_sampler(
    lengths: list[int], batch_size: int, max_tokens: int | None = DEFAULT_PREDICT_MAX_TOKENS
) -> LengthBucketSampler:
    """How sentences to tag are batched in one process, from a file or from Python alike: by
    length, at most ``batch_size`` sentences and ``max_tokens`` padded tokens a batch (the cap
    bounds the activations of a batch of long sentences; ``None`` lifts it)."""
    return LengthBucketSampler(
        lengths, batch_size, shuffle=False, num_replicas=1, rank=0, max_tokens=max_tokens
    )


class PredictionStream(IterableDataset):
    """Batches of the sentences read by ``read``, chunk by chunk, for this process's chunks.

    Every batch is a dict as :func:`~seqtag.data.batching.collate` makes it, plus ``tokens``,
    ``extra`` (JSON Lines fields to pass through), ``chunk`` (the chunk's number) and
    ``chunk_size``. Sentences without tokens (an empty JSON ``tokens`` list) come in a batch of
    their own without ``words``.

    Args:
        read: returns a fresh iterator over the input's sentences.
        vocabularies: the model's, to encode with.
        batch_size: at most this many sentences per batch.
        chunk_size: sentences per chunk.
        skip_chunks: how many of *this process's* chunks to skip (already written by an
            interrupted run that is being resumed); a callable, asked when iteration starts.
        max_tokens: at most this many padded tokens per batch (sentences x longest), which
            bounds the activations of a batch of long sentences.
    """

    def __init__(
        self,
        read: Callable[[], Iterator[Sentence]],
        vocabularies: Vocabularies,
        batch_size: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        skip_chunks: Callable[[], int] = lambda: 0,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.read = read
        self.vocabularies = vocabularies
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.skip_chunks = skip_chunks
        self.max_tokens = max_tokens

    def loader(self) -> DataLoader:
        """A DataLoader that hands out this stream's batches as they are.

        The loader's default conversion would walk every token string of every batch looking
        for numbers to turn into tensors (0.6 s of 6 s tagging EWT's training text).
        """
        return DataLoader(self, batch_size=None, collate_fn=_unchanged)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        world_size, rank = world()
        skip = self.skip_chunks()
        sentences = self.read()
        for chunk in itertools.count():
            block = list(itertools.islice(sentences, self.chunk_size))
            if not block:
                return
            if chunk % world_size != rank or chunk // world_size < skip:
                continue
            yield from self._batches(chunk, block)

    def _batches(self, chunk: int, block: list[Sentence]) -> Iterator[dict[str, Any]]:
        start = chunk * self.chunk_size
        meta = {"chunk": chunk, "chunk_size": self.chunk_size}
        empty = [i for i, sentence in enumerate(block) if not sentence.tokens]
        if empty:
            yield {
                "index": torch.tensor([start + i for i in empty], dtype=torch.long),
                "tokens": [() for _ in empty],
                "extra": [block[i].extra for i in empty],
                **meta,
            }
        encoded = [
            encode_sentence(self.vocabularies, start + i, s.tokens, keep_tokens=True)
            for i, s in enumerate(block)
            if s.tokens
        ]
        if not encoded:
            return
        sampler = inference_sampler(
            [len(s.words) for s in encoded], self.batch_size, self.max_tokens
        )
        for positions in sampler:
            batch = collate([encoded[p] for p in positions])
            batch["extra"] = [block[encoded[p].index - start].extra for p in positions]
            batch.update(meta)  # still a Batch: a trainer moves it in one call
            yield batch


def _unchanged(batch: dict[str, Any]) -> dict[str, Any]:
    return batch
