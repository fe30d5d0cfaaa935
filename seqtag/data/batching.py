"""Sentences as model ids, and batches of them: encoding, padding and collation.

Which sentences share a batch (by length, per process, resumably) is decided by
:mod:`seqtag.data.sampling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqtag.data.vocab import Vocabularies

#: Target id of padding positions: ignored by the loss and by every metric.
PAD_TARGET = -100
#: Target id of a gold tag that the training data never had: never predicted, so always wrong.
UNSEEN_TARGET = -1
#: Target id of a token whose gold tag is unknown (partial labels, see
#: :mod:`seqtag.data.partial`), or could be one of several: ``allowed`` says which; metrics
#: skip it.
UNKNOWN_TARGET = -2


@dataclass(frozen=True, slots=True)
class EncodedSentence:
    """One sentence as model ids, with its position in the input file.

    ``allowed`` (bool [n_tokens, num_tags]) is set only for a sentence with unknown gold tags:
    the tags each token may have (see :mod:`seqtag.data.partial`).
    """

    index: int
    words: np.ndarray
    tags: np.ndarray | None
    chars: list[np.ndarray] | None
    gold: tuple[str, ...] | None = None
    tokens: tuple[str, ...] | None = None
    allowed: np.ndarray | None = None


def encode_sentence(
    vocabularies: Vocabularies,
    index: int,
    tokens: Sequence[str],
    tags: np.ndarray | None = None,
    gold: tuple[str, ...] | None = None,
    keep_tokens: bool = False,
    allowed: np.ndarray | None = None,
) -> EncodedSentence:
    """Word (and, when the model has them, character) ids of one tokenised sentence.

    The one place text becomes model input, shared by the DataModule and ``tag()``.
    ``keep_tokens`` keeps the strings too, for prediction output.
    """
    chars = None
    if vocabularies.chars is not None:
        chars = vocabularies.char_arrays(tokens)
    words = np.asarray(vocabularies.encode_words(tokens), dtype=np.int64)
    kept = tuple(tokens) if keep_tokens else None
    return EncodedSentence(index, words, tags, chars, gold, kept, allowed)


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


class Batch(dict):
    """A collated batch: a dict of tensors and, for scoring and output, lists of strings.

    Its :meth:`to` moves the tensors and hands the lists over as they are. Lightning's default
    ``transfer_batch_to_device`` calls ``to`` on any object that has one, so a trainer moves a
    batch in one call instead of walking every token string of it looking for tensors (about
    20 ms for 256 sentences with their gold tags and tokens); no hook needs overriding.
    """

    def to(self, device: torch.device | str, non_blocking: bool | None = None) -> Batch:
        """A batch with every tensor on ``device`` (non-blocking where the device allows it)."""
        device = torch.device(device)
        if non_blocking is None:
            non_blocking = device.type not in ("cpu", "mps")
        return Batch(
            (
                key,
                value.to(device, non_blocking=non_blocking) if isinstance(value, Tensor) else value,
            )
            for key, value in self.items()
        )


def collate(batch: Sequence[EncodedSentence] | EncodedSentence) -> Batch:
    """Pad a batch to its longest sentence.

    Returns a :class:`Batch` (a dict) of tensors: ``words`` [B, T], ``lengths`` [B] (on the CPU,
    as packing needs), ``mask`` [B, T] bool, ``index`` [B] (positions in the input file), and
    when present ``tags`` [B, T] (``PAD_TARGET`` at padding), ``chars`` [B, T, C] (0 at
    padding) and ``gold``, the gold tag strings in the corpus's own scheme (a list, for span
    scoring), and ``tokens``, the sentences' tokens (a list, for prediction output).

    ``allowed`` [B, T, num_tags] bool, the tags each position may have, comes only when some
    sentence of the batch has unknown gold tags (otherwise the batch is as without partial
    labels): a sentence's own ``allowed`` rows, else one-hot on the gold tag; all true at
    padding and at unseen gold tags.

    One sentence on its own is a batch of one: Lightning's ``overfit_batches`` swaps the length
    sampler, which hands out whole batches, for one that hands out single sentences.
    """
    if isinstance(batch, EncodedSentence):
        batch = [batch]
    lengths = np.fromiter((len(s.words) for s in batch), dtype=np.int64, count=len(batch))
    size, longest = len(batch), int(lengths.max())
    words = np.zeros((size, longest), dtype=np.int64)
    for row, sentence in enumerate(batch):
        words[row, : len(sentence.words)] = sentence.words
    lengths_t = torch.from_numpy(lengths)
    out = Batch(
        words=torch.from_numpy(words),
        lengths=lengths_t,
        mask=torch.arange(longest)[None, :] < lengths_t[:, None],
        index=torch.tensor([s.index for s in batch], dtype=torch.long),
    )
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
    if batch[0].tokens is not None:
        out["tokens"] = [s.tokens for s in batch]
    if any(s.allowed is not None for s in batch):
        out["allowed"] = torch.from_numpy(_allowed(batch, longest))
    return out


def _allowed(batch: Sequence[EncodedSentence], longest: int) -> np.ndarray:
    """The batch's allowed tags [B, T, num_tags]; num_tags is the width of a sentence's own."""
    num_tags = next(s.allowed.shape[1] for s in batch if s.allowed is not None)
    allowed = np.ones((len(batch), longest, num_tags), dtype=bool)
    for row, sentence in enumerate(batch):
        if sentence.allowed is not None:
            allowed[row, : len(sentence.allowed)] = sentence.allowed
            continue
        known = np.flatnonzero(sentence.tags >= 0)
        allowed[row, known] = False
        allowed[row, known, sentence.tags[known]] = True
    return allowed
