"""One split of a :class:`~seqtag.TaggingDataModule`, from a file or from memory, checked.

A split is a corpus file or sentences held in Python memory (:mod:`seqtag.data.io.memory`);
both are read into the same :class:`~seqtag.data.io.sentence.Sentence` objects and go through
the same checks (tags in the declared scheme, the missing-tag marker, partial annotation), so
everything after reading (vocabularies, batches, sharding) cannot tell them apart. The errors
about a file name its line; those about sentences in memory name the split and the sentence's
0-based position (``train sentence 3: ...``).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from seqtag.data.io.formats import Sentence, iter_corpus
from seqtag.data.io.memory import is_in_memory, iter_memory, read_memory
from seqtag.data.tag_checks import PartialScreen, check_gold_tags
from seqtag.errors import ConfigError, CorpusFormatError

log = logging.getLogger(__name__)

#: The format the gold-tag checks are told for sentences from memory (no CoNLL-U column).
MEMORY_FORMAT = "memory"


def is_given(source: Any) -> bool:
    """Whether a split has a file (an empty path is none) or sentences in memory."""
    return is_in_memory(source) or bool(source)


def source_name(split: str, source: Any) -> str:
    """How messages name a split: its path, ``train split (in memory)``, or its name alone
    (``val`` held out of the training data)."""
    if is_in_memory(source):
        return f"{split} split (in memory)"
    return os.fspath(source) if source else split


def read_split(
    split: str,
    source: Any,
    options: Mapping[str, Any],
    corpus_scheme: str | None,
    missing_tag: str | None,
) -> list[Sentence]:
    """The checked sentences of a split (``predict``: tags ignored).

    Args:
        split: ``train``, ``val``, ``test`` or ``predict``.
        source: a path or sentences in memory.
        options: the DataModule's settings (format, columns, keys).
        corpus_scheme: the tag scheme the gold tags must be in (``None``: POS-style tags).
        missing_tag: the marker of unknown tags.
    """
    sentences: list[Sentence] = []
    scan_split(split, source, options, corpus_scheme, missing_tag, sentences.append)
    return sentences


def scan_split(
    split: str,
    source: Any,
    options: Mapping[str, Any],
    corpus_scheme: str | None,
    missing_tag: str | None,
    visit: Callable[[Sentence], object],
) -> None:
    """Read a split once, lazily, with :func:`read_split`'s checks, handing each sentence the
    split keeps to ``visit``; nothing is held, so a training corpus larger than memory can be
    counted and encoded (:mod:`seqtag.data.counts`, :mod:`seqtag.data.corpus_cache`).

    The checks that judge the whole file (the declared scheme, a split without a known tag)
    raise once the file is read, after ``visit`` saw its sentences: a caller keeps what it
    built only when this returns.
    """
    tagged = split != "predict"
    name = source_name(split, source)
    if is_in_memory(source):
        fmt = MEMORY_FORMAT
        sentences: Iterable[Sentence] = read_memory(
            split,
            source,
            token_key=options["token_key"],
            tag_key=options["tag_key"],
            require_tags=tagged,
        )
    else:
        fmt = (options["predict_format"] or options["format"]) if not tagged else options["format"]
        sentences = iter_corpus(
            source,
            fmt,
            tag_field=options["tag_field"],
            token_column=options["token_column"],
            tag_column=options["tag_column"],
            require_tags=tagged,
            missing_tag=missing_tag,
        )
    count = tokens = 0
    screen = PartialScreen(split, name, missing_tag if tagged else None)

    def kept() -> Iterator[Sentence]:
        nonlocal count, tokens
        for sentence in sentences:
            if screen.keep(sentence):
                visit(sentence)
                count += 1
                tokens += len(sentence.tokens)
                yield sentence

    stream = kept()
    try:
        if tagged:  # the scheme checks read the stream when there is a scheme
            check_gold_tags(name, stream, corpus_scheme, fmt, options["tag_field"], missing_tag)
        deque(stream, maxlen=0)  # the rest, or all of it
        screen.finish()
    except CorpusFormatError as err:
        raise _in_memory_error(split, name, err) if is_in_memory(source) else err from None
    log.info("%s: read %d sentences, %d tokens from %s", split, count, tokens, name)


def hold_out(
    sentences: list[Sentence], count: int, name: str
) -> tuple[list[Sentence], list[Sentence]]:
    """``(train, val)``: the last ``count`` training sentences held out for validation
    (``data.val_from_train``); ``name`` names the training data in the error."""
    if count >= len(sentences):
        raise ConfigError(
            f"data.val_from_train={count} leaves no training sentences: {name} has {len(sentences)}"
        )
    log.info("holding out the last %d training sentences for validation", count)
    return sentences[:-count], sentences[-count:]


def sentence_reader(source: Any, options: Mapping[str, Any]) -> Callable[[], Iterator[Sentence]]:
    """A fresh lazy reader of the text to tag, for each pass of the prediction stream."""
    if is_in_memory(source):
        return lambda: iter_memory(
            "predict",
            source,
            token_key=options["token_key"],
            tag_key=options["tag_key"],
            require_tags=False,
        )
    return lambda: iter_corpus(
        source,
        options["predict_format"] or options["format"],
        tag_field=options["tag_field"],
        token_column=options["token_column"],
        tag_column=options["tag_column"],
        require_tags=False,
    )


def _in_memory_error(split: str, name: str, err: CorpusFormatError) -> CorpusFormatError:
    """A file-worded check's error about sentences in memory, naming the sentence instead.

    The checks report a sentence by its ``line``, which for sentences in memory holds their
    position in the split.
    """
    if err.path != name:
        return err
    where = f"{split} sentence {err.line}" if err.line is not None else name
    message = err.message.removeprefix("in the sentence starting on this line: ")
    return CorpusFormatError(where, None, message.replace("the file", "the split"))
