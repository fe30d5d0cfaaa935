"""Frozen, deterministic string <-> id maps, saved as plain data inside checkpoints.

Ids must not depend on hash seeds or set order: a vocabulary rebuilt from the same corpus gives
the same ids, and a checkpoint restores exactly the ids the model was trained with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from seqtag.data.schemes import normalize_scheme

PAD = "<pad>"
UNK = "<unk>"

PAD_ID = 0
"""Id of the padding entry, in every vocabulary that has one (words and characters alike).

:class:`Vocabulary` always puts padding first, so batches are padded with this id and row
``PAD_ID`` of an embedding table is the padding row.
"""

_DIGITS = str.maketrans("0123456789", "0000000000")

#: Shapes of unknown words (see :func:`word_shape`); each has its own unknown entry.
SHAPES: tuple[str, ...] = (
    "punctuation",
    "number",
    "alphanumeric",
    "lower",
    "title",
    "upper",
    "mixed",
    "lower-hyphen",
    "title-hyphen",
    "upper-hyphen",
    "mixed-hyphen",
)


def word_shape(word: str) -> str:
    """A coarse shape class of a word: its case pattern, digits, punctuation and hyphens.

    An unknown capitalised word is most likely a proper noun, an unknown all-digit word a
    number: one shared unknown entry throws that evidence away. These classes are read off the
    spelling only (no character model), like the unknown-word signatures of classic taggers.
    """
    has_letter = any(c.isalpha() for c in word)
    has_digit = any(c.isdigit() for c in word)
    if not has_letter:
        return "number" if has_digit else "punctuation"
    if has_digit:
        return "alphanumeric"
    if word.islower():
        case = "lower"
    elif word.isupper():
        case = "upper"
    elif word[0].isupper() and not any(c.isupper() for c in word[1:]):
        case = "title"
    else:
        case = "mixed"
    return f"{case}-hyphen" if "-" in word else case


def shape_entry(shape: str) -> str:
    """The vocabulary entry of unknown words of one shape, such as ``<unk:title>``."""
    return f"<unk:{shape}>"


def normalize_digits(word: str) -> str:
    """Map every ASCII digit to ``0`` so that unseen numbers share the ids of seen ones."""
    return word.translate(_DIGITS)


#: How :func:`lookup_forms` derived a spelling from the word looked up.
LOOKUP_METHODS: tuple[str, ...] = ("exact", "lower", "digits")


def lookup_forms(word: str) -> list[tuple[str, str]]:
    """The spellings a word is looked up under, in order, each with its method.

    Exact, lowercase, digits normalised (every ASCII digit becomes ``0``), then lowercase with
    digits normalised; forms equal to an earlier one are left out. Vocabularies and pretrained
    vectors both follow this rule, so a word's vector and its vocabulary row come from the same
    spelling.
    """
    forms = [(word, "exact")]
    lower = word.lower()
    if lower != word:
        forms.append((lower, "lower"))
    for form in (normalize_digits(word), normalize_digits(lower)):
        if all(form != seen for seen, _ in forms):
            forms.append((form, "digits"))
    return forms


class Vocabulary:
    """An immutable list of strings with an index; optional padding and unknown entries first.

    Args:
        items: the entries after the special ones, in the order their ids should follow.
        pad: the padding entry (id :data:`PAD_ID`), or ``None`` for a vocabulary without
            padding (tags).
        unk: the unknown entry, or ``None`` when every lookup must succeed.
        fallback: look words up under every spelling of :func:`lookup_forms` (exact,
            lowercase, digits normalised) before giving up with ``unk``; this is how word forms
            never seen in training still find the row of a seen spelling.
        unknown_shapes: give unknown words one unknown entry per :func:`word_shape`
            (``<unk:title>``, ``<unk:number>``, ...) after ``unk`` instead of ``unk`` itself.
    """

    def __init__(
        self,
        items: Iterable[str],
        *,
        pad: str | None = PAD,
        unk: str | None = UNK,
        fallback: bool = False,
        unknown_shapes: bool = False,
    ) -> None:
        if unknown_shapes and unk is None:
            raise ValueError("unknown_shapes needs an unknown entry (unk)")
        specials = [s for s in (pad, unk) if s is not None]  # padding first: id PAD_ID
        if unknown_shapes:
            specials += [shape_entry(shape) for shape in SHAPES]
        entries = specials + [item for item in items if item not in specials]
        self._items: tuple[str, ...] = tuple(entries)
        self._index: dict[str, int] = {item: i for i, item in enumerate(self._items)}
        if len(self._index) != len(self._items):
            duplicates = sorted(item for item, n in Counter(self._items).items() if n > 1)
            raise ValueError(f"vocabulary entries must be unique, repeated: {duplicates[:5]}")
        self.pad = pad
        self.unk = unk
        self.fallback = fallback
        self.unknown_shapes = unknown_shapes
        self.pad_id = PAD_ID if pad is not None else None
        self.unk_id = self._index[unk] if unk is not None else None
        self.num_specials = len(specials)

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        min_freq: int = 1,
        extra: Iterable[str] = (),
        **kwargs: Any,
    ) -> Vocabulary:
        """Keep items seen at least ``min_freq`` times plus ``extra``; ids follow sorted order."""
        kept = {item for item, n in counts.items() if n >= min_freq}
        kept.update(extra)
        return cls(sorted(kept), **kwargs)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __iter__(self):
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} entries, pad={self.pad!r}, unk={self.unk!r})"

    @property
    def items(self) -> tuple[str, ...]:
        return self._items

    def lookup(self, item: str) -> int | None:
        """Return the id of ``item`` (with fallbacks when enabled), or ``None`` if absent."""
        found = self._index.get(item)
        if found is not None or not self.fallback:
            return found
        for form, _ in lookup_forms(item)[1:]:  # the exact form was tried above
            found = self._index.get(form)
            if found is not None:
                return found
        return None

    def index(self, item: str) -> int:
        """Id of ``item``; the unknown id when absent, a ``KeyError`` if there is no unknown."""
        found = self.lookup(item)
        if found is not None:
            return found
        if self.unk_id is None:
            raise KeyError(item)
        return self.unknown_id(item)

    def unknown_id(self, item: str) -> int:
        """The id ``item`` would get if it were unknown: its shape's entry, or ``unk``."""
        if self.unknown_shapes:
            return self._index[shape_entry(word_shape(item))]
        return self.unk_id

    def encode(self, items: Iterable[str]) -> list[int]:
        return [self.index(item) for item in items]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self._items[i] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, strings, bools) so that checkpoints load with ``weights_only``."""
        return {
            "items": list(self._items[self.num_specials :]),
            "pad": self.pad,
            "unk": self.unk,
            "fallback": self.fallback,
            "unknown_shapes": self.unknown_shapes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        return cls(
            data["items"],
            pad=data["pad"],
            unk=data["unk"],
            fallback=data["fallback"],
            unknown_shapes=bool(data.get("unknown_shapes", False)),
        )


#: Characters kept per word for character features unless the data module sets it: longer words
#: keep their first and last characters (prefixes and suffixes carry the morphology).
DEFAULT_MAX_WORD_LENGTH = 30


@dataclass(frozen=True)
class Vocabularies:
    """Everything that maps between strings and model ids, stored in every checkpoint.

    Attributes:
        words: word forms, with padding, unknown and the :func:`lookup_forms` fallback.
        tags: the training tag set, in the scheme the model is trained in (no specials).
        chars: characters for character features, or ``None`` when the model has none.
        lowercase: words are lowercased before lookup.
        tag_scheme: scheme the model predicts in (``None`` for POS-style tags).
        corpus_scheme: scheme of the corpus files; predictions are converted back to it.
        max_word_length: characters kept per word for character features.
    """

    words: Vocabulary
    tags: Vocabulary
    chars: Vocabulary | None = None
    lowercase: bool = False
    tag_scheme: str | None = None
    corpus_scheme: str | None = None
    max_word_length: int = DEFAULT_MAX_WORD_LENGTH

    def encode_words(self, tokens: Sequence[str]) -> list[int]:
        """Word ids of tokens: one dictionary lookup for a token seen before (see
        :class:`TokenMemo`), the vocabulary's fallbacks only for a new one."""
        table, remember = self._memo.words, self._memo.remember
        return [
            found if (found := table.get(t)) is not None else remember(table, t, self._word_id(t))
            for t in tokens
        ]

    def encode_chars(self, tokens: Sequence[str]) -> list[list[int]]:
        """Character ids per token; long words keep their first and last characters."""
        return [ids.tolist() for ids in self.char_arrays(tokens)]

    def char_arrays(self, tokens: Sequence[str]) -> list[np.ndarray]:
        """:meth:`encode_chars` as read-only int64 arrays, one per token, shared between the
        occurrences of a token (what batches are built from)."""
        if self.chars is None:
            raise ValueError("this model has no character vocabulary")
        table, remember = self._memo.chars, self._memo.remember
        return [
            found if (found := table.get(t)) is not None else remember(table, t, self._char_ids(t))
            for t in tokens
        ]

    def _word_id(self, token: str) -> int:
        return self.words.index(token.lower() if self.lowercase else token)

    def _char_ids(self, token: str) -> np.ndarray:
        max_word_length = self.max_word_length
        if len(token) > max_word_length:
            half = max_word_length // 2
            token = token[:half] + token[len(token) - (max_word_length - half) :]
        ids = np.array(self.chars.encode(token), dtype=np.int64)  # type: ignore[union-attr]
        ids.flags.writeable = False  # shared by every occurrence of the token
        return ids

    @cached_property
    def _memo(self) -> TokenMemo:
        return TokenMemo()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (DDP spawn, Ray) without the memo: it is rebuilt as tokens come."""
        state = dict(self.__dict__)
        state.pop("_memo", None)
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": self.words.to_dict(),
            "tags": self.tags.to_dict(),
            "chars": self.chars.to_dict() if self.chars is not None else None,
            "lowercase": self.lowercase,
            "tag_scheme": self.tag_scheme,
            "corpus_scheme": self.corpus_scheme,
            "max_word_length": self.max_word_length,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabularies:
        chars = data.get("chars")
        return cls(
            words=Vocabulary.from_dict(data["words"]),
            tags=Vocabulary.from_dict(data["tags"]),
            chars=Vocabulary.from_dict(chars) if chars is not None else None,
            lowercase=bool(data.get("lowercase", False)),
            tag_scheme=data.get("tag_scheme"),
            corpus_scheme=data.get("corpus_scheme"),
            max_word_length=int(data.get("max_word_length", DEFAULT_MAX_WORD_LENGTH)),
        )


#: Distinct tokens a :class:`TokenMemo` remembers before it starts over: a corpus repeats its
#: words (EWT's 204,577 training tokens are 19,672 distinct strings), and the memo's memory stays
#: a few MiB whatever the input.
TOKEN_MEMO_SIZE = 50_000


class TokenMemo:
    """Ids of tokens already encoded, so that text is not looked up character by character,
    fallback by fallback, at every occurrence of a word (the ids cannot change: vocabularies
    are frozen). Each table is emptied when it reaches :data:`TOKEN_MEMO_SIZE` entries."""

    def __init__(self) -> None:
        self.words: dict[str, int] = {}
        self.chars: dict[str, np.ndarray] = {}

    @staticmethod
    def remember(table: dict[str, Any], token: str, encoded: Any) -> Any:
        """Keep ``token``'s encoding in ``table`` (one of the two above) and return it."""
        if len(table) >= TOKEN_MEMO_SIZE:
            table.clear()
        table[token] = encoded
        return encoded


def check_vocabulary_data(data: Any) -> None:
    """Stored vocabularies are the plain data :meth:`Vocabularies.to_dict` writes, of the
    expected types, before anything is built from them (a ``ValueError`` names the entry).

    Checkpoints and prepared corpora are files an attacker may have written; both readers
    (:mod:`seqtag.checkpoint.io`, :mod:`seqtag.data.prepared_format`) ask this first.
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected a dictionary, found a {type(data).__name__}")
    for name in ("words", "tags", "chars"):
        entry = data.get(name)
        if entry is None and name == "chars":
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"'{name}' is a {type(entry).__name__}, expected a dictionary")
        items = entry.get("items")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"'{name}' entries must be a list of strings")
        if name == "tags" and not items:
            raise ValueError("the tag set is empty")
        for key in ("pad", "unk"):
            if not isinstance(entry.get(key), str | None):
                raise ValueError(f"'{name}.{key}' must be a string or null")
        for key in ("fallback", "unknown_shapes"):
            if not isinstance(entry.get(key, False), bool):
                raise ValueError(f"'{name}.{key}' must be true or false")
    if not isinstance(data.get("lowercase", False), bool):
        raise ValueError("'lowercase' must be true or false")
    for key in ("tag_scheme", "corpus_scheme"):
        if not isinstance(data.get(key), str | None):
            raise ValueError(f"'{key}' must be a scheme name or null")
        if data.get(key) is not None:
            normalize_scheme(data[key])  # a TagSchemeError (a ValueError) for unknown names
    length = data.get("max_word_length", DEFAULT_MAX_WORD_LENGTH)
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ValueError(f"'max_word_length' must be an integer >= 1, found {length!r}")
