"""The training loader of a prepared corpus: LitData's ``StreamingDataLoader``, seqtag's batches.

LitData streams the chunks (from the folder, or fetched from the object store into its cache),
shards them across processes and machines (it reads ``torch.distributed``, which Lightning has
set up by the time the loader is made) and shuffles with ``data.seed``. Its loader is stateful:
Lightning saves ``state_dict()`` in every checkpoint and a resumed run continues at the batch
after the last one trained. Each item becomes an :class:`~seqtag.data.batching.EncodedSentence`,
checked against the model's vocabularies first (a chunk is untrusted input), and a batch is
made by seqtag's :func:`~seqtag.data.batching.collate`, as from a corpus file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from seqtag.data.batching import UNKNOWN_TARGET, Batch, EncodedSentence, collate
from seqtag.data.prepared_format import ITEM_KEYS, litdata
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CorpusFormatError


def streaming_loader(
    location: str, vocabularies: Vocabularies, options: Mapping[str, Any]
) -> DataLoader:
    """Batches of ``data.batch_size`` sentences of the corpus at ``location``, in LitData's
    shuffled order (``data.seed``), this process's share only."""
    module = litdata()
    dataset = module.StreamingDataset(location, shuffle=True, seed=options["seed"])
    workers = options["num_workers"]
    # A DataLoader draws its workers' base seed when a pass starts, from torch's global
    # generator unless given its own; LitData's loader does so at the first batch, after a
    # resumed run has put the global state back, which would shift every later dropout mask.
    # Its own generator leaves the global stream to the model, the same resumed or not.
    generator = torch.Generator().manual_seed(options["seed"])
    return module.StreamingDataLoader(
        dataset,
        batch_size=options["batch_size"],
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=PreparedBatches(location, vocabularies),
        generator=generator,
    )


class PreparedBatches:
    """Collates stored sentences into seqtag's batches, checking each against the model.

    Args:
        location: the prepared corpus, for messages.
        vocabularies: the model's; ids outside them are refused (a changed chunk), and the
            characters are left out when the model has none.
    """

    def __init__(self, location: str, vocabularies: Vocabularies) -> None:
        self.location = location
        self.num_words = len(vocabularies.words)
        self.num_tags = len(vocabularies.tags)
        self.num_chars = None if vocabularies.chars is None else len(vocabularies.chars)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> Batch:
        return collate([self.sentence(item) for item in items])

    def sentence(self, item: Mapping[str, Any]) -> EncodedSentence:
        """One stored sentence as model input, or a one-line error naming the corpus."""
        if not isinstance(item, Mapping) or sorted(item) != sorted(ITEM_KEYS):
            raise self._error("an item is not a sentence seqtag prepare wrote")
        index = item["index"]
        if not isinstance(index, int | np.integer) or index < 0:
            raise self._error("an item has no valid sentence position")
        words = self._ids(item, "words", 0, self.num_words)
        length = len(words)
        tags = self._ids(item, "tags", UNKNOWN_TARGET, self.num_tags)
        allowed = item["allowed"]
        if length == 0 or len(tags) != length:
            raise self._bad(index, "its words and tags differ in number, or it has no token")
        if not isinstance(allowed, np.ndarray) or allowed.dtype != bool:
            raise self._bad(index, "its allowed tags are not a boolean array")
        if allowed.shape == (0, 0):
            if (tags < 0).any():
                raise self._bad(index, "it has unknown tags but no allowed tags")
            allowed = None
        elif allowed.shape != (length, self.num_tags):
            raise self._bad(index, f"its allowed tags have shape {allowed.shape}")
        chars = self._chars(item, index, length)
        return EncodedSentence(int(index), words, tags, chars, allowed=allowed)

    def _ids(self, item: Mapping[str, Any], key: str, low: int, high: int) -> np.ndarray:
        ids = item[key]
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise self._bad(item["index"], f"its {key} are not an array of ids")
        ids = ids.astype(np.int64)
        if len(ids) and (ids.min() < low or ids.max() >= high):
            raise self._bad(item["index"], f"its {key} hold ids outside the vocabularies")
        return ids

    def _chars(self, item: Mapping[str, Any], index: int, length: int) -> list[np.ndarray] | None:
        if self.num_chars is None:
            return None
        chars = self._ids(item, "chars", 0, self.num_chars)
        offsets = self._ids(item, "char_offsets", 0, len(chars) + 1)
        if (
            len(offsets) != length + 1
            or offsets[0] != 0
            or offsets[-1] != len(chars)
            or (np.diff(offsets) < 0).any()
        ):
            raise self._bad(index, "its character offsets do not fit its characters")
        return np.split(chars, offsets[1:-1])

    def _bad(self, index: Any, what: str) -> CorpusFormatError:
        return self._error(f"the sentence at position {index}: {what}")

    def _error(self, what: str) -> CorpusFormatError:
        return CorpusFormatError(
            self.location, None, f"{what} (the chunks were changed after seqtag prepare)"
        )
