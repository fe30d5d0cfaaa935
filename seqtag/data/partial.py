"""Gold tags as training targets, and partial labels: tokens whose gold tag is unknown.

A partially annotated corpus marks the tokens whose tag nobody decided with a missing-tag
marker (the DataModule's ``missing_tag``, ``_`` by default). The marker is not a tag: it never
enters the tag vocabulary or the scheme checks, and it is not an unseen tag. A model learns
from the tags each token may have instead of one gold tag: an unknown token may have any tag,
a known token its own. When the model trains in another scheme than the corpus's, a known
token's converted tag can depend on an unknown neighbour (IOB2 ``B-NP`` before an unknown
tag is BIOES ``B-NP`` or ``S-NP``), and it may then have either. Conversions among iob1, iob2
and bioes read chunk starts and ends off adjacent tags only, so a token's possible tags come
from converting its three-token window with every completion of its unknown neighbours.

Encoded (:class:`GoldEncoder`), a sentence with unknown tags carries ``allowed`` (bool
``[n_tokens, num_tags]``), and its ``tags`` hold :data:`UNKNOWN_TARGET` wherever more than
one tag is allowed; a fully tagged sentence is encoded exactly as without this feature.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from seqtag.data.batching import UNKNOWN_TARGET, UNSEEN_TARGET, EncodedSentence, encode_sentence
from seqtag.data.schemes import (
    convert_tags,
    scheme_tags,
    split_tag,
)
from seqtag.data.vocab import Vocabularies
from seqtag.errors import ConfigError

log = logging.getLogger(__name__)

_EDGE = ""  # no token: the sentence's start or end (no tag or marker is empty)

Possible = frozenset[str] | None
"""The training-scheme tags one token may have; ``None``: any tag (its gold tag is unknown)."""


def check_missing_tag(value: Any) -> str | None:
    """The marker of unknown tags, or ``None`` (no marker); a one-line error otherwise."""
    if value is None or (isinstance(value, str) and value and not any(c.isspace() for c in value)):
        return value
    raise ConfigError(
        "data.missing_tag must be a non-empty tag without whitespace (such as _ or -), or null "
        f"for none, got {value!r}"
    )


def gold_strings(tags: Sequence[str], missing_tag: str | None) -> tuple[str | None, ...]:
    """A sentence's gold tags as batches carry them (``batch["gold"]``): the marker of an unknown
    tag becomes ``None``, so that metrics and reports need not know which marker the data uses
    (a model restored from a checkpoint scores data with any marker)."""
    if missing_tag is None:
        return tuple(tags)
    return tuple(None if tag == missing_tag else tag for tag in tags)


class GoldTags:
    """Corpus tags -> training-scheme tags, the marker read as "unknown".

    Args:
        corpus_scheme: scheme of the corpus files (``None``: no spans, tags are kept).
        train_scheme: scheme the model trains in.
        missing_tag: the marker of unknown tags, or ``None`` for none.
        types: the chunk types of the tag set; an unknown neighbour may have any corpus tag
            of them (or ``O``).
    """

    def __init__(
        self,
        corpus_scheme: str | None,
        train_scheme: str | None,
        missing_tag: str | None,
        types: Iterable[str] = (),
    ) -> None:
        self.corpus_scheme = corpus_scheme
        self.train_scheme = train_scheme
        self.missing_tag = missing_tag
        self.converts = bool(corpus_scheme and train_scheme and train_scheme != corpus_scheme)
        self._candidates = scheme_tags(types, corpus_scheme) if self.converts else []
        self._windows: dict[tuple[str | None, str, str | None], frozenset[str]] = {}

    def is_partial(self, tags: Sequence[str]) -> bool:
        """Whether some tag of the sentence is unknown."""
        return self.missing_tag is not None and self.missing_tag in tags

    def converted(self, tags: Sequence[str]) -> Sequence[str]:
        """The training-scheme tags of a fully tagged sentence."""
        if self.converts:
            return convert_tags(tags, self.corpus_scheme, self.train_scheme)
        return tags

    def possible(self, tags: Sequence[str]) -> list[Possible]:
        """Per token, the training-scheme tags it may have (``None``: any)."""
        known = [None if tag == self.missing_tag else tag for tag in tags]
        if not self.converts:
            return [None if tag is None else frozenset((tag,)) for tag in known]
        padded = [_EDGE, *known, _EDGE]
        return [
            None if tag is None else self._window(padded[i], tag, padded[i + 2])
            for i, tag in enumerate(known)
        ]

    def _window(self, prev: str | None, tag: str, nxt: str | None) -> frozenset[str]:
        """The converted tags of ``tag`` between ``prev`` and ``nxt`` (``None``: unknown)."""
        key = (prev, tag, nxt)
        found = self._windows.get(key)
        if found is None:
            lefts, rights = (self._neighbours(side) for side in (prev, nxt))
            found = frozenset(
                convert_tags([*left, tag, *right], self.corpus_scheme, self.train_scheme)[len(left)]
                for left in lefts
                for right in rights
            )
            self._windows[key] = found
        return found

    def _neighbours(self, side: str | None) -> list[tuple[str, ...]]:
        """The tags a neighbour may have: none at an edge, any corpus tag if unknown."""
        if side == _EDGE:
            return [()]
        return [(tag,) for tag in (self._candidates if side is None else [side])]

    def vocabulary_tags(self, tags: Sequence[str]) -> Sequence[str]:
        """The training-scheme tags the sentence's known tokens may have: the tag vocabulary's."""
        if not self.is_partial(tags):
            return self.converted(tags)
        return [tag for options in self.possible(tags) if options for tag in sorted(options)]


def training_types(
    tags: Iterable[Sequence[str]], scheme: str | None, missing_tag: str | None
) -> set[str]:
    """The chunk types of the known tags of a corpus in ``scheme`` (none without a scheme)."""
    if not scheme:
        return set()
    return {
        split_tag(tag, scheme)[1] for sentence in tags for tag in sentence if tag != missing_tag
    } - {None}


class GoldEncoder:
    """A split's gold tags as target ids of one model's tag vocabulary, counting what it met.

    Attributes:
        unseen: training-scheme tags missing from the vocabulary, with their counts.
        known_tokens: tokens with a known gold tag.
    """

    def __init__(self, vocabularies: Vocabularies, missing_tag: str | None) -> None:
        self.tags = vocabularies.tags
        if missing_tag is not None and missing_tag in self.tags:
            raise ConfigError(
                f"data.missing_tag {missing_tag!r} is a tag of the model: set data.missing_tag "
                "to null, or to a marker that is not a tag"
            )
        types = training_types([self.tags], vocabularies.tag_scheme, None)
        schemes = vocabularies.corpus_scheme, vocabularies.tag_scheme
        self.gold = GoldTags(*schemes, missing_tag, types)
        self.unseen: Counter[str] = Counter()
        self.known_tokens = 0

    def __call__(self, tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Target ids of one sentence, and its allowed tags when some tag is unknown."""
        if self.gold.is_partial(tags):
            return self._partial(tags)
        tag_ids = []
        for tag in self.gold.converted(tags):
            tag_id = self.tags.lookup(tag)
            if tag_id is None:
                self.unseen[tag] += 1
                tag_id = UNSEEN_TARGET
            tag_ids.append(tag_id)
        self.known_tokens += len(tag_ids)
        return np.asarray(tag_ids, dtype=np.int64), None

    def refuse_unseen_in_training(self, source: str) -> None:
        """Refuse training targets the model has no tag for: a CRF would learn them as the
        first tag and softmax skip them, a silently wrong model either way. Evaluation keeps
        them (:meth:`report_unseen`): scoring a model on tags it never learned is legitimate.

        Raises:
            ConfigError: naming a few of the tags, a count of the rest, and the ways on.
        """
        if not self.unseen:
            return
        shown = [f"{tag} ({n:,})" for tag, n in self.unseen.most_common(5)]
        more = len(self.unseen) - len(shown)
        named = ", ".join(shown) + (f" and {more:,} more" if more else "")
        tokens = sum(self.unseen.values())
        raise ConfigError(
            f"{source}: {tokens:,} training tokens have tags the model does not know, {named}, "
            "and fine-tuning would learn them as other tags: extend the model with the new "
            "data first (model = model.extended(dm.spec); see docs/lightning.md, Fine-tuning "
            "on new data), or train a new model on it (without a checkpoint)"
        )

    def report_unseen(self, source: str) -> None:
        """Warn about gold tags the model never saw; refuse a split where most tokens have one.

        ``source`` names the split's file in the error: when none, or only a few, of its tags
        are in the tag set (a file sharing two tags with the model scored nan or 0), it is the
        wrong checkpoint or the wrong tag column, not a hard test set.
        """
        if not self.unseen:
            return
        listed = ", ".join(f"{tag} ({n})" for tag, n in self.unseen.most_common(10))
        unseen = sum(self.unseen.values())
        if 2 * unseen > self.known_tokens:  # most of them: no score would mean anything
            known = ", ".join(list(self.tags)[:8])
            what = (
                "none of its gold tags is"
                if unseen == self.known_tokens
                else f"most of its gold tokens ({unseen:,} of {self.known_tokens:,}) have tags not"
            )
            raise ConfigError(
                f"{source}: {what} in the model's tag set ({known}, ...), found {listed}: is "
                "this the right checkpoint and tag column?"
            )
        log.warning(
            "%d gold tokens have tags never seen in training; they count as errors: %s",
            sum(self.unseen.values()),
            listed,
        )

    def _partial(self, tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        possible = self.gold.possible(tags)
        num_tags = len(self.tags)
        allowed = np.ones((len(tags), num_tags), dtype=bool)
        ids = np.full(len(tags), UNKNOWN_TARGET if num_tags > 1 else 0, dtype=np.int64)
        for i, options in enumerate(possible):
            if options is None:
                continue
            self.known_tokens += 1
            found = sorted(j for j in map(self.tags.lookup, options) if j is not None)
            if not found:  # an unseen tag: the model cannot predict it, nothing to learn
                self.unseen["/".join(sorted(options))] += 1
                ids[i] = UNSEEN_TARGET
                continue
            allowed[i] = False
            allowed[i, found] = True
            if len(found) == 1:
                ids[i] = found[0]
        return ids, allowed


def encode_split(
    vocabularies: Vocabularies,
    sentences: Sequence[Any],
    missing_tag: str | None,
    source: str,
    *,
    with_tags: bool,
    training: bool,
) -> list[EncodedSentence]:
    """A split's sentences as ids; gold tags unseen in training become ``UNSEEN_TARGET``, and
    sentences with unknown ones get their allowed tags (see :class:`GoldEncoder`).

    A training split with a tag its model does not have is refused (``source`` names it in
    the message): learning an unknown tag as another is never right. Without ``with_tags``
    (text to tag) the tokens are kept for the output instead.
    """
    targets = GoldEncoder(vocabularies, missing_tag if with_tags else None)
    encoded = []
    for i, sentence in enumerate(sentences):
        tags = gold = allowed = None
        if with_tags and sentence.tags is not None:
            gold = gold_strings(sentence.tags, missing_tag)
            tags, allowed = targets(sentence.tags)
        encoded.append(
            encode_sentence(
                vocabularies, i, sentence.tokens, tags, gold, not with_tags, allowed=allowed
            )
        )
    if training:
        targets.refuse_unseen_in_training(source)
    targets.report_unseen(source)
    return encoded
