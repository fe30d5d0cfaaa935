"""Character features per word type: deduplication within a batch, and a cache across batches.

A batch of text repeats its words ("the", ",", "."): in 256 EWT sentences about 4,800 real
tokens are only about 1,600 distinct spellings. :func:`unique_rows` finds the distinct
character-id rows, the extractor runs on those only, and the features are gathered back to
the tokens. :class:`CharFeatureCache` keeps the features of recently seen spellings between
inference batches, so that only new spellings are computed. :class:`PerTypeExtractor`, the base
of :class:`~seqtag.models.chars.CharCNN` and :class:`~seqtag.models.chars.CharBiLSTM`, puts the
two together (when each applies, and the choice about dropout: see :mod:`seqtag.models.chars`).

All of it is Python only: the TorchScript graphs that :mod:`seqtag.integrations.export` writes
compute every
word, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CharFeatureCache", "PerTypeExtractor", "unique_rows"]

#: The cache size of a new extractor: distinct spellings kept between inference batches.
DEFAULT_CACHE_SIZE = 50_000

# Odd 64-bit multipliers for the row hash, one per character position; fixed, so that the
# order of the distinct rows (sorted by hash) is deterministic.
_MULTIPLIERS = (
    torch.randint(-(1 << 63), (1 << 63) - 1, (64,), generator=torch.Generator().manual_seed(0)) | 1
)


def _multipliers(width: int, device: torch.device) -> Tensor:
    """``[width]`` hash multipliers: the 64 fixed ones, times another odd number per 64."""
    rounds = (width + _MULTIPLIERS.numel() - 1) // _MULTIPLIERS.numel()
    repeated = torch.cat([_MULTIPLIERS * (2 * r + 1) for r in range(rounds)])[:width]
    return repeated.to(device)


def unique_rows(words: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of ``words [N, C]`` and where each row went.

    Returns ``first [U]`` (the position in ``words`` of one occurrence of each distinct row)
    and ``inverse [N]`` (the distinct row of each row), so ``words[first][inverse]`` equals
    ``words``. Rows are hashed to one int64 each (a wrapping linear hash), the hashes sorted
    with ``torch.unique``, and the result checked row by row: ten times faster than
    ``torch.unique(words, dim=0)`` on a batch of 256 sentences (0.5 ms against 5 ms), which is
    what a hash collision falls back to.
    """
    count = words.size(0)
    positions = torch.arange(count, device=words.device)
    hashes = (words.long() * _multipliers(words.size(1), words.device)).sum(dim=1)  # [N]
    distinct, inverse = torch.unique(hashes, return_inverse=True)  # sorted
    # Any occurrence will do as the representative once the check below has passed.
    first = torch.zeros(distinct.numel(), dtype=torch.long, device=words.device)
    first = first.scatter_reduce(0, inverse, positions, "amin", include_self=False)
    if torch.equal(words.index_select(0, first).index_select(0, inverse), words):
        return first, inverse
    _, inverse = torch.unique(words, dim=0, return_inverse=True)  # a collision: exact rows
    first = torch.zeros(int(inverse.max()) + 1, dtype=torch.long, device=words.device)
    return first.scatter_reduce(0, inverse, positions, "amin", include_self=False), inverse


Compute = Callable[[Tensor, Tensor], Tensor]


def _spellings(words: Tensor, lengths: list[int]) -> list[bytes]:
    """Each row's first ``lengths`` character ids as bytes: keys that ignore the padded width.

    Slicing one bytes object is several times faster than building tuples from ``tolist()``.
    """
    data = words.to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes()
    stride = 8 * words.size(1)
    return [data[i * stride : i * stride + 8 * n] for i, n in enumerate(lengths)]


def _autocast_state(device_type: str) -> tuple[Any, ...]:
    """Whether autocast is on for ``device_type``, and to what dtype: features depend on it."""
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4: no device_type argument
        return (
            torch.is_autocast_enabled(),
            torch.is_autocast_cpu_enabled(),
            torch.get_autocast_gpu_dtype(),
            torch.get_autocast_cpu_dtype(),
        )


class CharFeatureCache:
    """Bounded LRU map from a spelling (its character ids) to its feature vector.

    Features live in one ``[capacity, D]`` tensor on the extractor's device, so hits are read
    with one ``index_select``; the map holds row numbers. It is valid only for the parameters
    it was filled with: each call compares the extractor's current parameters and buffers (and
    the autocast state) with a copy taken when it was filled, and starts over when anything
    differs. That catches optimizer steps, ``load_state_dict``, ``.to()`` and writes through
    ``.data``, which parameter version counters miss; for a character model (tens of thousands
    of numbers) the comparison costs microseconds. Features are stored detached, computed
    without gradients, so the cache never holds an autograd graph. Pickling or copying the
    cache drops its contents.

    Args:
        max_size: the most spellings kept; 0 disables the cache.
    """

    def __init__(self, max_size: int = DEFAULT_CACHE_SIZE) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be at least 0, got {max_size}")
        self.max_size = max_size
        self.clear()

    def clear(self) -> None:
        """Forget every spelling (and the parameters they were computed with)."""
        self._rows: OrderedDict[bytes, int] = OrderedDict()  # spelling -> row of _store
        self._store: Tensor | None = None  # [capacity, D]
        self._state: list[Tensor] = []  # copies of the parameters the features come from
        self._context: tuple[Any, ...] = ()

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_size": self.max_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_size = state["max_size"]
        self.clear()

    def features(
        self, words: Tensor, char_mask: Tensor, compute: Compute, state: Sequence[Tensor]
    ) -> Tensor:
        """Features ``[U, D]`` of the distinct spellings ``words [U, C]``, computing only misses.

        Args:
            words: distinct character-id rows, left-aligned (padding after the characters).
            char_mask: ``[U, C]`` True at real characters.
            compute: the extractor's own computation, ``(words, char_mask) -> [n, D]``.
            state: the extractor's parameters and buffers, which the features depend on.
        """
        self._check(state)
        # Up to the last real character: the rest of a row is padding, even if (against the
        # convention) a word has padding inside.
        positions = torch.arange(1, words.size(1) + 1, device=words.device)
        lengths = (char_mask * positions).amax(dim=1).tolist()
        keys = _spellings(words, lengths)
        hits, misses, found_rows = [], [], []
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None:
                misses.append(i)
            else:
                hits.append(i)
                found_rows.append(row)
                self._rows.move_to_end(key)
        device = words.device
        computed = None
        if misses:
            index = torch.tensor(misses, device=device)
            width = max(lengths[i] for i in misses)  # the longest new spelling
            computed = compute(
                words.index_select(0, index)[:, :width], char_mask.index_select(0, index)[:, :width]
            ).detach()
            if not hits:
                self._add([keys[i] for i in misses], computed)
                return computed
        assert self._store is not None  # there are hits
        found = self._store.index_select(0, torch.tensor(found_rows, device=device))
        if computed is None:
            return found
        out = found.new_empty(len(keys), found.size(1))
        out.index_copy_(0, torch.tensor(hits, device=device), found)
        out.index_copy_(0, torch.tensor(misses, device=device), computed)
        self._add([keys[i] for i in misses], computed)
        return out

    def _check(self, state: Sequence[Tensor]) -> None:
        """Start over unless ``state`` and the autocast state are what the features came from."""
        context = _autocast_state(state[0].device.type if state else "cpu")
        same = (
            context == self._context
            and len(state) == len(self._state)
            and all(
                a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                for a, b in zip(state, self._state, strict=True)
            )
        )
        if same:
            same = all(torch.equal(a, b) for a, b in zip(state, self._state, strict=True))
        if not same:
            self.clear()
            self._state = [tensor.detach().clone() for tensor in state]
            self._context = context
        # A store made in inference mode cannot be written outside it.
        store = self._store
        if store is not None and store.is_inference() and not torch.is_inference_mode_enabled():
            self._rows.clear()
            self._store = None

    def _add(self, keys: list[bytes], features: Tensor) -> None:
        """Insert new spellings, evicting the least recently used ones beyond ``max_size``."""
        if self.max_size == 0:
            return
        store = self._store
        if store is not None and (store.dtype, store.device) != (features.dtype, features.device):
            self._rows.clear()
            self._store = store = None
        keys, features = keys[-self.max_size :], features[-self.max_size :]
        rows = []
        for key in keys:
            if len(self._rows) < self.max_size:
                row = len(self._rows)
            else:
                _, row = self._rows.popitem(last=False)
            self._rows[key] = row
            rows.append(row)
        needed = max(rows) + 1
        if store is None or store.size(0) < needed:
            capacity = min(self.max_size, max(needed, 2 * (0 if store is None else store.size(0))))
            grown = features.new_empty(capacity, features.size(1))
            if store is not None:
                grown[: store.size(0)] = store
            self._store = store = grown
        store.index_copy_(0, torch.tensor(rows, device=store.device), features)


class PerTypeExtractor(nn.Module):
    """Base of the character extractors: their features per word type, cached across batches.

    A subclass implements :meth:`_features` and calls :meth:`real_word_features` from its
    ``forward``; TorchScript compiles that to :meth:`_features` alone.

    Args:
        per_type: compute each distinct spelling of a batch once (False: every word slot).
        cache_size: distinct spellings whose features are kept between inference batches.
    """

    def __init__(self, per_type: bool, cache_size: int) -> None:
        super().__init__()
        self.per_type: bool = per_type
        self.type_cache = CharFeatureCache(cache_size)

    def train(self, mode: bool = True) -> PerTypeExtractor:
        """Also empty the type cache when training starts: its features are about to go stale."""
        if mode:
            self.type_cache.clear()
        return super().train(mode)

    def _features(self, words: Tensor, char_mask: Tensor) -> Tensor:
        """Features ``[N, D]`` of real words ``[N, C]`` with their ``char_mask``."""
        raise NotImplementedError

    def real_word_features(self, words: Tensor, char_mask: Tensor) -> Tensor:
        """:meth:`_features`, per type and through the cache where allowed (see the module doc)."""
        if torch.jit.is_scripting() or not self.per_type:
            return self._features(words, char_mask)
        return self._type_features(words, char_mask)

    @torch.jit.unused
    def _type_features(self, words: Tensor, char_mask: Tensor) -> Tensor:
        """:meth:`_features` of each distinct row of ``words`` once, gathered back to the rows.

        Evaluation without gradients (or with frozen parameters) reads and fills the cache.
        """
        first, inverse = unique_rows(words)
        distinct, distinct_mask = words.index_select(0, first), char_mask.index_select(0, first)
        state = [*self.parameters(), *self.buffers()]
        cached = (
            self.type_cache.max_size > 0
            and not self.training
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in state))
        )
        if cached:
            features = self.type_cache.features(distinct, distinct_mask, self._features, state)
        else:
            features = self._features(distinct, distinct_mask)
        return features.index_select(0, inverse)
