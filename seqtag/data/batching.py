"""Padding, collation and the length-bucketing sampler.

Batches group sentences of similar length, so an RNN step spends its time on real tokens rather
than padding. The sampler does its own sharding across processes (it subclasses
``DistributedSampler`` so Lightning does not wrap it again): training shards are equally long on
every rank, evaluation shards cover every sentence exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

#: Target id of padding positions: ignored by the loss and by every metric.
PAD_TARGET = -100
#: Target id of a gold tag that the training data never had: never predicted, so always wrong.
UNSEEN_TARGET = -1


@dataclass(frozen=True, slots=True)
class EncodedSentence:
    """One sentence as model ids, with its position in the input file."""

    index: int
    words: np.ndarray
    tags: np.ndarray | None
    chars: list[np.ndarray] | None
    gold: tuple[str, ...] | None = None


class EncodedDataset(Dataset):
    """Encoded sentences; indexing with a list of positions returns a whole batch."""

    def __init__(self, sentences: Sequence[EncodedSentence]) -> None:
        self.sentences = list(sentences)

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, item: int | Sequence[int]) -> EncodedSentence | list[EncodedSentence]:
        if isinstance(item, int):
            return self.sentences[item]
        return [self.sentences[i] for i in item]

    @property
    def lengths(self) -> list[int]:
        return [len(s.words) for s in self.sentences]


def collate(batch: Sequence[EncodedSentence]) -> dict[str, Tensor]:
    """Pad a batch to its longest sentence.

    Returns a dict of tensors: ``words`` [B, T], ``lengths`` [B] (on the CPU, as packing needs),
    ``mask`` [B, T] bool, ``index`` [B] (positions in the input file), and when present
    ``tags`` [B, T] (``PAD_TARGET`` at padding), ``chars`` [B, T, C] (0 at padding) and
    ``gold``, the gold tag strings in the corpus's own scheme (a list, for span scoring).
    """
    lengths = np.fromiter((len(s.words) for s in batch), dtype=np.int64, count=len(batch))
    size, longest = len(batch), int(lengths.max())
    words = np.zeros((size, longest), dtype=np.int64)
    for row, sentence in enumerate(batch):
        words[row, : len(sentence.words)] = sentence.words
    lengths_t = torch.from_numpy(lengths)
    out = {
        "words": torch.from_numpy(words),
        "lengths": lengths_t,
        "mask": torch.arange(longest)[None, :] < lengths_t[:, None],
        "index": torch.tensor([s.index for s in batch], dtype=torch.long),
    }
    if batch[0].tags is not None:
        tags = np.full((size, longest), PAD_TARGET, dtype=np.int64)
        for row, sentence in enumerate(batch):
            tags[row, : len(sentence.tags)] = sentence.tags
        out["tags"] = torch.from_numpy(tags)
    if batch[0].chars is not None:
        widest = max(len(word) for s in batch for word in s.chars)
        chars = np.zeros((size, longest, max(widest, 1)), dtype=np.int64)
        for row, sentence in enumerate(batch):
            for col, word in enumerate(sentence.chars):
                chars[row, col, : len(word)] = word
        out["chars"] = torch.from_numpy(chars)
    if batch[0].gold is not None:
        out["gold"] = [s.gold for s in batch]
    return out


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class LengthBucketSampler(DistributedSampler):
    """Yields lists of sentence positions (whole batches) grouped by length.

    Training (``shuffle=True``): sentences are shuffled, cut into pools of ``pool_size``
    batches, sorted by length inside each pool and cut into batches, and the batch order is
    shuffled; the shuffle depends on ``seed`` and on the epoch set by ``set_epoch``. Every rank
    builds the same batch list and takes every ``num_replicas``-th batch; the list is padded by
    repeating its first batches so that all ranks run the same number of steps.

    Evaluation (``shuffle=False``): sentences sorted by length are dealt to the ranks in turn, so
    every sentence is seen exactly once across ranks and the shards differ by at most one
    sentence; each rank then batches its shard in length order.

    Use it as ``DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        pool_size: int = 100,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        world, this_rank = _world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = this_rank if rank is None else rank
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.pool_size = pool_size

    def _training_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.lengths))
        pool = self.batch_size * self.pool_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            )
        return [batches[i] for i in rng.permutation(len(batches))]

    def _batches(self) -> list[np.ndarray]:
        if self.shuffle:
            batches = self._training_batches()
            if not batches:
                return []
            per_rank = math.ceil(len(batches) / self.num_replicas)
            padded = batches * math.ceil(per_rank * self.num_replicas / len(batches))
            return padded[: per_rank * self.num_replicas][self.rank :: self.num_replicas]
        order = np.argsort(self.lengths, kind="stable")[self.rank :: self.num_replicas]
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        if self.shuffle:
            pool = self.batch_size * self.pool_size
            total = sum(
                math.ceil(min(pool, len(self.lengths) - start) / self.batch_size)
                for start in range(0, len(self.lengths), pool)
            )
            return math.ceil(total / self.num_replicas)
        shard = len(range(self.rank, len(self.lengths), self.num_replicas))
        return math.ceil(shard / self.batch_size)

    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens over one pass of this rank's batches."""
        real = padded = 0
        for batch in self._batches():
            lengths = self.lengths[batch]
            real += int(lengths.sum())
            padded += int(lengths.max()) * len(batch)
        return real / padded if padded else 1.0
