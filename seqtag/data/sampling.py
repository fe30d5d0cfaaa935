"""Which sentences form each batch, on which process, resumably: the length-bucketing sampler.

Batches group sentences of similar length, so an RNN step spends its time on real tokens rather
than padding. The sampler does its own sharding across processes (it subclasses
``DistributedSampler`` so Lightning does not wrap it again): training shards are equally long on
every rank, evaluation shards cover every sentence exactly once. :class:`ResumableDataLoader`
resumes its pass in the middle of an epoch; :func:`bucketed_loader` makes a split's loader of
them. What goes into a batch is :mod:`seqtag.data.batching`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from seqtag.data.batching import collate
from seqtag.errors import ConfigError


def world() -> tuple[int, int]:
    """``(number of processes, this process's rank)``; ``(1, 0)`` outside distributed runs.

    The one place that decides how many processes share the data: the training sampler and
    the prediction stream both split their work by it.
    """
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

    ``max_tokens`` bounds the padded size (sentences x longest sentence) of training batches,
    and with it the activation memory of a step: CoNLL-2002 holds whole documents as
    "sentences" (over a thousand tokens), and a batch of them multiplies a training step's
    memory (benchmarks/README.md). Sentences longer than ``max_tokens // batch_size`` are set
    apart once and batched by length under the cap; the others are batched as above. The
    number of batches is therefore the same in every epoch, as Lightning expects.

    Evaluation (``shuffle=False``): sentences sorted by length are dealt to the ranks in turn, so
    every sentence is seen exactly once across ranks and the shards differ by at most one
    sentence; each rank then batches its shard in length order. An evaluation batch holds at
    most ``batch_size`` sentences and is closed early, once it has ``min_eval_batch``
    sentences, where the next sentence would drop its real/padded token ratio below
    ``eval_padding_target``: 256 sentences in a row of sorted EWT test sentences span lengths
    20 to 46, so a fixed-size batch wastes a quarter of its work on padding (0.77), while
    these batches reach 0.93 and are no slower per token on a CPU (see benchmarks/).

    Use it as ``DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=collate)``.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        pool_size: int = 100,
        num_replicas: int | None = None,
        rank: int | None = None,
        min_eval_batch: int = 32,
        eval_padding_target: float = 0.9,
        max_tokens: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        world_size, this_rank = world()
        num_replicas = world_size if num_replicas is None else num_replicas
        rank = this_rank if rank is None else rank
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.pool_size = pool_size
        self.min_eval_batch = min_eval_batch
        self.eval_padding_target = eval_padding_target
        self.max_tokens = max_tokens
        # Training sentences too long to share a full batch under max_tokens, batched once.
        long = np.zeros(len(self.lengths), dtype=bool)
        if max_tokens is not None:
            long = self.lengths * batch_size > max_tokens
        self._regular = np.flatnonzero(~long)
        long_order = np.flatnonzero(long)
        long_order = long_order[np.argsort(self.lengths[long_order], kind="stable")]
        self._long_batches = self._cut_in_length_order(long_order, max_tokens=max_tokens)
        #: ``(epoch, batches to skip)`` for the next pass, set by :meth:`resume_at`.
        self._resume: tuple[int, int] | None = None

    def _cut_in_length_order(
        self,
        order: np.ndarray,
        *,
        max_tokens: int | None = None,
        min_size: int = 0,
        padding_target: float = 0.0,
    ) -> list[np.ndarray]:
        """Cut positions sorted by length into consecutive batches, greedily.

        A batch closes at ``batch_size`` sentences; or where the next sentence would take it
        past ``max_tokens`` padded tokens; or, once it holds ``min_size`` sentences, where the
        next one would drop its real/padded token ratio below ``padding_target``.
        """
        batches: list[np.ndarray] = []
        start = real = 0
        for end, length in enumerate(self.lengths[order].tolist()):
            size = end - start
            padded = (size + 1) * length  # the batch's padded tokens with this sentence
            if size and (
                size == self.batch_size
                or (max_tokens is not None and padded > max_tokens)
                or (size >= min_size and real + length < padding_target * padded)
            ):
                batches.append(order[start:end])
                start, real = end, 0
            real += length
        if start < len(order):
            batches.append(order[start:])
        return batches

    def _training_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = self._regular[rng.permutation(len(self._regular))]
        pool = self.batch_size * self.pool_size
        batches = list(self._long_batches)
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
        return self._cut_in_length_order(
            order,
            max_tokens=self.max_tokens,
            min_size=self.min_eval_batch,
            padding_target=self.eval_padding_target,
        )

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass continue epoch ``epoch`` after its first ``batches_done`` batches.

        A finished epoch (``batches_done >= len(self)``) resumes at the start of the next one.
        The skip applies to the next pass only, and only if the epoch is still ``epoch`` when
        it starts (Lightning may call :meth:`set_epoch` in between).
        """
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.set_epoch(epoch)
        self._resume = (epoch, batches_done)

    @property
    def pending_skip(self) -> int:
        """Batches the next pass will skip (0 unless :meth:`resume_at` was called)."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def __iter__(self) -> Iterator[list[int]]:
        skip = self.pending_skip
        self._resume = None
        for batch in self._batches()[skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        if self.shuffle:
            pool = self.batch_size * self.pool_size
            regular = len(self._regular)
            total = len(self._long_batches) + sum(
                math.ceil(min(pool, regular - start) / self.batch_size)
                for start in range(0, regular, pool)
            )
            return math.ceil(total / self.num_replicas)
        return len(self._batches())

    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens over one pass of this rank's batches."""
        real = padded = 0
        for batch in self._batches():
            lengths = self.lengths[batch]
            real += int(lengths.sum())
            padded += int(lengths.max()) * len(batch)
        return real / padded if padded else 1.0


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`LengthBucketSampler` that can resume in the middle of an epoch.

    Lightning saves ``state_dict()`` of every training loader that has one in the checkpoint
    (``loops.fit_loop.state_dict.combined_loader``) and calls ``load_state_dict()`` before it
    iterates again after ``--ckpt_path``. The state is the sampler's epoch and how many batches
    this loader has handed out in it (counted here, after the worker processes, so their
    read-ahead does not count); the restored pass skips those batches without loading them.
    The state is plain ints, so the checkpoint still opens with ``weights_only=True``.
    """

    _batches_done = 0
    _epoch = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        # Not a generator: DataLoader.__iter__ draws its base seed from torch's global
        # generator, and that draw must happen when Lightning calls iter() (before a restored
        # random state is put back), not lazily at the first batch.
        sampler = self.sampler
        if isinstance(sampler, LengthBucketSampler):
            self._epoch = sampler.epoch
            self._batches_done = sampler.pending_skip
        return _CountingIterator(self, super().__iter__())

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        if not isinstance(sampler, LengthBucketSampler):
            return {}
        if self._epoch != sampler.epoch:  # not iterated in this epoch yet
            return {"epoch": int(sampler.epoch), "batches_done": 0}
        return {"epoch": int(self._epoch), "batches_done": int(self._batches_done)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        sampler = self.sampler
        if isinstance(sampler, LengthBucketSampler) and "epoch" in state_dict:
            sampler.resume_at(int(state_dict["epoch"]), int(state_dict["batches_done"]))


class _CountingIterator:
    """Counts the batches a :class:`ResumableDataLoader` pass hands out."""

    def __init__(self, loader: ResumableDataLoader, iterator: Iterator[dict[str, Tensor]]):
        self.loader = loader
        self.iterator = iterator

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> dict[str, Tensor]:
        batch = next(self.iterator)
        self.loader._batches_done += 1
        return batch

    def __len__(self) -> int:
        return len(self.iterator)


def bucketed_loader(
    dataset: Dataset,
    split: str,
    *,
    batch_size: int,
    training: bool,
    seed: int,
    pool_size: int,
    max_tokens: int | None,
    num_workers: int,
) -> DataLoader:
    """A split's loader: length-bucketed batches of ``dataset`` (which has ``lengths`` and
    takes a list of positions), shuffled and resumable mid-epoch for training.

    With several processes each evaluates its own share; a share without sentences is refused
    here, as one line, because Lightning refuses a process without batches and the others
    would wait for it.
    """
    sampler = LengthBucketSampler(
        dataset.lengths,
        batch_size,
        shuffle=training,
        seed=seed,
        pool_size=pool_size,
        max_tokens=max_tokens,
    )
    if not training and len(dataset) < sampler.num_replicas:
        raise ConfigError(
            f"the {split} data has {len(dataset)} sentence(s) for {sampler.num_replicas} "
            "processes, which need one each: use fewer devices (--trainer.devices)"
        )
    # The training loader can resume mid-epoch from a checkpoint (see ResumableDataLoader).
    loader_class = ResumableDataLoader if training else DataLoader
    return loader_class(
        dataset,
        sampler=sampler,
        batch_size=None,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
