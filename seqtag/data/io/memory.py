"""Sentences held in Python memory -> :class:`~seqtag.data.io.sentence.Sentence`, as files are read.

A split of :class:`~seqtag.TaggingDataModule` may be a file or sentences already in memory:

- a list of ``(tokens, tags)`` pairs: ``[(["The", "cat"], ["DET", "NOUN"]), ...]``;
- a list of dicts, ``{"tokens": [...], "tags": [...]}`` (the keys are the DataModule's
  ``token_key`` and ``tag_key``), the rows of a Hugging Face ``datasets.Dataset``, which is
  read the same way, as is a pandas ``DataFrame`` with one sentence per row (a column of token
  lists and one of tag lists);
- for the text to tag only, also plain token lists: ``[["The", "cat"], ...]`` (the tags of
  pairs and dicts are ignored there, as a file's are).

Tags are strings in the corpus's tag scheme, as in a file; a ``datasets`` column of class ids
(``ClassLabel``) is read as its class names. Every token and tag is checked by the rules of the
file readers (:func:`~seqtag.data.io.text_files.token_problem`), and a sentence that breaks one
is a :class:`~seqtag.errors.CorpusFormatError` naming the split and the sentence's 0-based
position in it (``train sentence 3: 4 tokens but 3 tags``), where a file's names the line.
Nothing here imports pandas or ``datasets``: both are recognised by what they offer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from seqtag.data.io.sentence import Sentence
from seqtag.data.io.text_files import first_token_problem, show_token
from seqtag.errors import ConfigError, CorpusFormatError

__all__ = ["InMemorySplit", "check_split", "is_in_memory", "iter_memory", "read_memory"]

#: What a split held in memory may be (see the module's documentation): an iterable that can
#: be read more than once, of pairs, dicts or (for the text to tag) token lists.
InMemorySplit = Iterable[Any]

_SHAPES = (
    "give a list of (tokens, tags) pairs, a list of dicts with the token and tag lists, a "
    "Hugging Face datasets.Dataset or a pandas DataFrame"
)


def is_in_memory(value: Any) -> bool:
    """Whether a split's value is sentences rather than a path (``None``: no split)."""
    return value is not None and not isinstance(value, str | os.PathLike)


def check_split(split: str, value: Any) -> None:
    """Refuse, in one line, a split value that is neither a path nor readable sentences.

    Checked when the DataModule is built, before anything is read: a dict of splits (a
    ``datasets.DatasetDict``) where one split was meant, bytes, a number, or a one-shot
    iterator (a generator), which the DataModule could read only once where it reads a split
    again (the vocabularies, then the batches; every ``trainer.predict``).
    """
    if not is_in_memory(value):
        return
    where = f"data.{split}_path"
    if isinstance(value, bytes | bytearray):
        raise ConfigError(f"{where} is bytes: give a file path as a str, or {_SHAPES}")
    if isinstance(value, Mapping):
        keys = ", ".join(map(repr, list(value)[:5]))
        raise ConfigError(
            f"{where} is a mapping ({keys}), not a list of sentences: for a dict of splits "
            f"(a datasets.DatasetDict) pass one split, e.g. dataset[{split!r}]"
        )
    if _is_frame(value):
        return
    if not isinstance(value, Iterable):
        raise ConfigError(f"{where} is a {type(value).__name__}: give a file path, or {_SHAPES}")
    if iter(value) is value:
        raise ConfigError(
            f"{where} is a one-shot iterator ({type(value).__name__}), which can be read only "
            "once: the DataModule reads a split more than once, so pass a list (list(...))"
        )


def read_memory(split: str, source: InMemorySplit, **options: Any) -> list[Sentence]:
    """All sentences of an in-memory split (see :func:`iter_memory`); refuses an empty one."""
    sentences = list(iter_memory(split, source, **options))
    if not sentences:
        raise CorpusFormatError(f"data.{split}_path", None, f"holds no sentences: {_SHAPES}")
    return sentences


def iter_memory(
    split: str,
    source: InMemorySplit,
    *,
    token_key: str = "tokens",
    tag_key: str = "tags",
    require_tags: bool = True,
) -> Iterator[Sentence]:
    """The sentences of an in-memory split, checked one by one as a file's lines are.

    Each :class:`Sentence` has ``line`` set to its 0-based position in the split, which the
    later checks (tag schemes, unknown tags) report as ``{split} sentence {line}``.

    Args:
        split: the split's name, for messages (``train``, ``val``, ``test``, ``predict``).
        source: the sentences (see the module's documentation).
        token_key: the key of the tokens in dicts and the column in a DataFrame.
        tag_key: the key of the tags.
        require_tags: the split is for training or evaluation, so every sentence needs a tag
            per token; for the text to tag (false), tags are ignored and plain token lists
            are accepted.

    Raises:
        CorpusFormatError: a sentence of the wrong shape, a token or tag that is not a
            string, breaks the token rule, or a count of tags unlike the count of tokens.
    """
    names = _class_names(source, tag_key)
    rows = _frame_rows(source) if _is_frame(source) else source
    for index, item in enumerate(rows):
        where = f"{split} sentence {index}"
        tokens, tags = _fields(where, item, token_key, tag_key, require_tags)
        tokens = _strings(where, "token", tokens)
        found = first_token_problem(tokens)
        if found is not None:
            raise CorpusFormatError(where, None, f"token {found[0]}, {found[1]}")
        if not require_tags:
            yield Sentence(tuple(tokens), None, index)
            continue
        if not tokens:
            raise CorpusFormatError(where, None, "has no tokens: every sentence needs one")
        tags = _strings(where, "tag", tags, names)
        if len(tags) != len(tokens):
            raise CorpusFormatError(where, None, f"{len(tokens)} tokens but {len(tags)} tags")
        for number, tag in enumerate(tags, 1):
            if not tag or any(c.isspace() for c in tag) or "\x00" in tag:
                raise CorpusFormatError(
                    where,
                    None,
                    f"tag {number}, {show_token(tag)}, is empty or holds whitespace: a tag is "
                    "one visible word (an unknown tag is the marker data.missing_tag, '_')",
                )
        yield Sentence(tuple(tokens), tuple(tags), index)


def _fields(
    where: str, item: Any, token_key: str, tag_key: str, require_tags: bool
) -> tuple[Any, Any]:
    """``(tokens, tags)`` of one item: a dict, a pair, or (text to tag) a token list."""
    if isinstance(item, Mapping):
        if token_key not in item:
            raise CorpusFormatError(where, None, _missing_key(item, token_key, "token_key"))
        if require_tags and tag_key not in item:
            raise CorpusFormatError(where, None, _missing_key(item, tag_key, "tag_key"))
        return item[token_key], item.get(tag_key)
    if isinstance(item, str | bytes) or not isinstance(item, Iterable):
        raise CorpusFormatError(
            where,
            None,
            f"is a {type(item).__name__}, not a sentence: {_SHAPES} (tokens as a list of "
            "strings, not one string)",
        )
    parts = list(item)
    if len(parts) == 2 and all(_is_list(part) for part in parts):
        return parts[0], parts[1]
    if not require_tags and not any(_is_list(part) for part in parts):
        return parts, None  # a token list, to tag
    raise CorpusFormatError(
        where,
        None,
        f"is a {type(item).__name__} of {len(parts)} items, not a (tokens, tags) pair: {_SHAPES}",
    )


def _missing_key(item: Mapping[Any, Any], key: str, option: str) -> str:
    keys = ", ".join(map(repr, list(item)[:8]))
    return f"has no {key!r} field (it has {keys}): set data.{option} to the field's name"


def _is_list(value: Any) -> bool:
    """A sequence of tokens or tags: not a string, but a list, tuple or array of them."""
    return not isinstance(value, str | bytes | Mapping) and isinstance(value, Iterable)


def _strings(where: str, what: str, values: Any, names: Sequence[str] | None = None) -> list[str]:
    """``values`` as a list of strings; class ids become their names when ``names`` are known."""
    if not _is_list(values):
        raise CorpusFormatError(
            where,
            None,
            f"its {what}s are a {type(values).__name__}, not a list of strings",
        )
    values = list(values)
    for number, value in enumerate(values, 1):
        if isinstance(value, str):
            continue
        if names is not None and _is_class_id(value) and 0 <= int(value) < len(names):
            values[number - 1] = names[int(value)]
            continue
        hint = ""
        if what == "tag" and _is_class_id(value):
            hint = (
                ": class ids must be mapped to their names first (for a datasets.Dataset: "
                "dataset.features[tag_key].feature.int2str)"
            )
        raise CorpusFormatError(
            where,
            None,
            f"{what} {number} is a {type(value).__name__} ({value!r}); {what}s must be "
            f"strings{hint}",
        )
    return values


def _is_class_id(value: Any) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")


def _class_names(source: Any, tag_key: str) -> list[str] | None:
    """The class names of a ``datasets`` column of class ids (``Sequence(ClassLabel)``)."""
    features = getattr(source, "features", None)
    if not isinstance(features, Mapping) or tag_key not in features:
        return None
    names = getattr(getattr(features[tag_key], "feature", None), "names", None)
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return names
    return None


def _is_frame(value: Any) -> bool:
    """A pandas ``DataFrame`` (iterating one gives its column names, not its rows)."""
    return all(hasattr(value, name) for name in ("columns", "itertuples", "iloc"))


def _frame_rows(frame: Any) -> Iterator[dict[str, Any]]:
    """The rows of a DataFrame as dicts of column name -> value, read lazily."""
    columns = [str(column) for column in frame.columns]
    for values in frame.itertuples(index=False, name=None):
        yield dict(zip(columns, values, strict=True))
