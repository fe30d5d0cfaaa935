"""Corpus counts: what the vocabularies need from a training corpus, counted in one pass.

A new model's vocabularies come from counts, not from the sentences themselves: how often each
word form, each character and each training-scheme tag occurs, and how many sentences and
tokens there are. :class:`CorpusCounter` takes sentences one at a time, so a corpus larger
than memory is counted as it streams past (:func:`~seqtag.data.splits.scan_split` reads a
split once with the checks of :func:`~seqtag.data.splits.read_split`), and
:class:`CorpusCounts` is plain data that a cache stores as JSON
(:mod:`seqtag.data.corpus_cache`), so a warm start-up does not read the corpus at all.
:func:`seqtag.data.spec.spec_from_counts` turns counts into a
:class:`~seqtag.data.spec.DataSpec`.

Word forms are counted as written: lowercasing (a vocabulary setting, which a checkpoint may
decide) merges them when the vocabulary is built, so one count serves both settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seqtag.data.io.sentence import Sentence
from seqtag.data.partial import GoldTags, training_types

#: A known token of a partially tagged sentence: the tags of its window (itself and its
#: neighbours, the marker where unknown) and its position in that window.
_Window = tuple[tuple[str, ...], int]


@dataclass(frozen=True)
class CorpusCounts:
    """How often each word form, character and training tag occurs in a training corpus.

    Attributes:
        words: occurrences of each word form, as written (not lowercased).
        chars: occurrences of each character of the word forms.
        tags: occurrences of each training-scheme tag (of a partially tagged sentence's known
            tokens, each tag they may have counts once).
        sentences: sentences kept for training.
        tokens: their tokens.
    """

    words: Mapping[str, int] = field(default_factory=dict)
    chars: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, int] = field(default_factory=dict)
    sentences: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (see :meth:`from_dict`)."""
        return {
            "words": dict(self.words),
            "chars": dict(self.chars),
            "tags": dict(self.tags),
            "sentences": self.sentences,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CorpusCounts:
        """Counts from :meth:`to_dict`'s data, checked: a ``ValueError`` says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the counts are not a JSON object")
        tables = {}
        for name in ("words", "chars", "tags"):
            table = data.get(name)
            if not isinstance(table, dict) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in table.values()
            ):
                raise ValueError(f"the {name} counts are not an object of positive integers")
            if name == "chars" and any(len(c) != 1 for c in table):
                raise ValueError("the character counts hold a key that is not one character")
            tables[name] = table
        totals = [data.get(name) for name in ("sentences", "tokens")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in totals):
            raise ValueError("the sentence and token totals are not counts")
        if sum(tables["words"].values()) != totals[1]:
            raise ValueError("the word counts do not add up to the token total")
        return cls(tables["words"], tables["chars"], tables["tags"], *totals)


class CorpusCounter:
    """Counts a training corpus one sentence at a time (:meth:`add`), tags in the corpus scheme.

    The training-scheme tags a partially tagged sentence's known token may have depend on the
    chunk types of the whole corpus (:class:`~seqtag.data.partial.GoldTags`), known only at
    the end: such tokens are counted by their window (their tags and their neighbours'),
    which is all the conversion reads, and resolved in :meth:`counts`. One pass either way.

    Args:
        corpus_scheme: the scheme of the corpus's tags (``None``: POS-style tags).
        train_scheme: the scheme the model trains in.
        missing_tag: the marker of unknown tags, or ``None``.
    """

    def __init__(
        self, corpus_scheme: str | None, train_scheme: str | None, missing_tag: str | None
    ) -> None:
        self.corpus_scheme = corpus_scheme
        self.train_scheme = train_scheme
        self.missing_tag = missing_tag
        self._gold = GoldTags(corpus_scheme, train_scheme, missing_tag)
        self._words: Counter[str] = Counter()
        self._chars: Counter[str] = Counter()
        self._tags: Counter[str] = Counter()
        self._corpus_tags: set[str] = set()
        self._windows: Counter[_Window] = Counter()
        self._sentences = 0

    def add(self, sentence: Sentence) -> None:
        """Count one training sentence (one the split keeps)."""
        tokens, tags = sentence.tokens, sentence.tags
        self._sentences += 1
        self._words.update(tokens)
        self._chars.update("".join(tokens))
        self._corpus_tags.update(tags)
        if not self._gold.is_partial(tags):
            self._tags.update(self._gold.converted(tags))
            return
        for i, tag in enumerate(tags):
            if tag != self.missing_tag:
                start = max(i - 1, 0)
                self._windows[tuple(tags[start : i + 2]), i - start] += 1

    def counts(self) -> CorpusCounts:
        """The counts of every sentence added so far."""
        tags = Counter(self._tags)
        if self._windows:
            types = training_types([self._corpus_tags], self.corpus_scheme, self.missing_tag)
            gold = GoldTags(self.corpus_scheme, self.train_scheme, self.missing_tag, types)
            for (window, position), n in self._windows.items():
                for tag in gold.possible(window)[position]:
                    tags[tag] += n
        return CorpusCounts(
            dict(self._words),
            dict(self._chars),
            dict(tags),
            self._sentences,
            self._words.total(),
        )
