"""Corpus file syntax: CoNLL-U, whitespace-separated columns and plain text -> sentences.

This module knows file formats and nothing else (no torch, no vocabularies, no tag schemes), so
it can be tested on tiny files and reused by prediction. Every malformed input raises
:class:`~seqtag.errors.CorpusFormatError` naming the file and the 1-based line, because a user
with a 200,000-line corpus needs to know exactly where to look.

Each format has a lazy reader (``iter_*``: one sentence at a time, for tagging corpora of any
size) and a list reader (``read_*``) for the training and evaluation splits, which fit in memory
many times over and are counted, sorted and bucketed. ``-`` as a path reads standard input.
The untagged formats (plain text, JSON Lines) are read by :mod:`seqtag.data.io.untagged_formats`;
:func:`iter_corpus` reads every format.

Line breaks: a line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (see
:func:`~seqtag.data.io.text_files.open_text`). The other characters that some software takes for a
line break (``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, U+0085, U+2028, U+2029: those of
``str.splitlines``) are neither line ends nor token separators, and a token or tag holding one
(or, in JSON Lines, a ``\\n`` or ``\\r``) is refused with the file, line, position and the
character's name. They are refused rather than replaced because the output promises the tokens
exactly as given (users join it back to their input), and a token with a line break would
otherwise come out as more lines than the sentence has tokens; the fix is one ``tr`` or
``sed`` away, and a page-break ``\\f`` on a line of its own is usually a sign of text that
needs cleaning anyway.

Tokens: every reader, and ``tag()``, applies one rule
(:func:`~seqtag.data.io.text_files.token_problem`): a token is not empty, not only whitespace (a
lone NBSP or U+3000 between the spaces of a line), and holds no NUL or line break. A NUL byte
anywhere is refused (:func:`~seqtag.data.io.text_files.open_text`): it is how UTF-16 text without
a byte-order mark reads as UTF-8.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, Literal

from seqtag.data.io.sentence import Sentence, split_fields
from seqtag.data.io.text_files import (
    LINE_BREAK,
    OTHER_SPACE,
    STDIN,
    check_tokens,
    line_break_error,
    open_text,
)
from seqtag.data.io.untagged_formats import iter_jsonl, iter_plain, read_plain
from seqtag.errors import ConfigError, CorpusFormatError

__all__ = [
    "CorpusFormat",
    "Sentence",
    "iter_corpus",
    "iter_jsonl",
    "iter_plain",
    "read_columns",
    "read_conllu",
    "read_corpus",
    "read_plain",
]

CorpusFormat = Literal["conllu", "columns", "text", "jsonl"]


_DOCSTART = "-DOCSTART-"
# Multiword tokens ("1-2") and empty nodes ("8.1") are not words of the surface sentence.
_SKIPPED_ID = re.compile(r"[0-9]+(?:-[0-9]+|\.[0-9]+)\Z")


def read_conllu(
    path: str | os.PathLike[str],
    tag_field: Literal["upos", "xpos"] = "upos",
    require_tags: bool = True,
    missing_tag: str | None = None,
) -> list[Sentence]:
    """All sentences of a CoNLL-U file (see :func:`iter_conllu`)."""
    return list(iter_conllu(path, tag_field, require_tags, missing_tag))


def iter_conllu(
    path: str | os.PathLike[str],
    tag_field: Literal["upos", "xpos"] = "upos",
    require_tags: bool = True,
    missing_tag: str | None = None,
) -> Iterator[Sentence]:
    """Read the words of a CoNLL-U file with their UPOS or XPOS tags, one sentence at a time.

    Comment lines, multiword-token lines (``1-2``) and empty nodes (``8.1``) are skipped, since
    a tagger labels the syntactic words. Trailing spaces and CRLF line ends are tolerated.

    Args:
        path: the ``.conllu`` file (optionally ``.gz``).
        tag_field: which column holds the tags to learn.
        require_tags: if true, a missing tag (``_`` or empty) is an error, as training and
            evaluation need every tag; if false, such a sentence gets ``tags=None``.
        missing_tag: a tag that means "unknown" (partial labels), kept as it is even where
            tags are required; ``_`` is one.

    Raises:
        CorpusFormatError: a line does not follow CoNLL-U.
    """
    if tag_field not in ("upos", "xpos"):
        raise ValueError(f"tag_field must be 'upos' or 'xpos', got {tag_field!r}")
    tag_index = 3 if tag_field == "upos" else 4
    tag_name = tag_field.upper()
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    tags_missing = False
    for lineno, line in open_text(path):
        line = line.rstrip(" \t\r")
        if not line:
            if tokens:
                yield Sentence(tuple(tokens), None if tags_missing else tuple(tags), start)
                tokens, tags, tags_missing = [], [], False
            continue
        if line[0] == "#":
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            hint = " (fields must be separated by tabs)" if len(fields) < 10 and " " in line else ""
            raise CorpusFormatError(
                path,
                lineno,
                f"expected 10 tab-separated fields (CoNLL-U), found {len(fields)}{hint}",
            )
        word_id = fields[0]
        if not (word_id.isdigit() and word_id.isascii()):
            if _SKIPPED_ID.match(word_id):
                continue
            raise CorpusFormatError(
                path,
                lineno,
                f"ID {word_id!r} is not a number, a range like 1-2 or a decimal like 8.1",
            )
        form = fields[1]
        if not form:
            raise CorpusFormatError(path, lineno, "FORM column is empty")
        if form.isspace():
            raise CorpusFormatError(
                path,
                lineno,
                f"FORM column is only whitespace ({form!r}): every token needs a visible character",
            )
        tag = fields[tag_index]
        if LINE_BREAK.search(line):
            if LINE_BREAK.search(form):
                raise line_break_error(path, lineno, form, len(word_id) + 1, "a token")
            if LINE_BREAK.search(tag):
                offset = sum(len(field) + 1 for field in fields[:tag_index])
                raise line_break_error(path, lineno, tag, offset, f"the {tag_name} tag")
        if (tag == "_" or not tag) and not (tag == missing_tag and require_tags):
            if require_tags:
                shown = "'_'" if tag else "empty"
                raise CorpusFormatError(
                    path,
                    lineno,
                    f"{tag_name} column is {shown}: every token needs a tag for "
                    "training/evaluation",
                )
            tags_missing = True
        if not tokens:
            start = lineno
        tokens.append(form)
        tags.append(tag)
    if tokens:
        yield Sentence(tuple(tokens), None if tags_missing else tuple(tags), start)


def _resolve_column(
    path: str | os.PathLike[str], lineno: int, role: str, column: int, count: int
) -> int:
    """Turn a possibly negative column number into an index, or explain why it does not exist."""
    index = column if column >= 0 else count + column
    if not 0 <= index < count:
        plural = "column" if count == 1 else "columns"
        raise CorpusFormatError(
            path, lineno, f"{role} column {column} does not exist: the line has {count} {plural}"
        )
    return index


def read_columns(
    path: str | os.PathLike[str],
    token_column: int = 0,
    tag_column: int = -1,
    require_tags: bool = True,
) -> list[Sentence]:
    """All sentences of a column file (see :func:`iter_columns`)."""
    return list(
        iter_columns(
            path, token_column=token_column, tag_column=tag_column, require_tags=require_tags
        )
    )


def iter_columns(
    path: str | os.PathLike[str],
    token_column: int = 0,
    tag_column: int = -1,
    require_tags: bool = True,
) -> Iterator[Sentence]:
    """Read a CoNLL-2000/2002/2003-style file: one token per line, columns split by whitespace.

    Blank lines end sentences; ``-DOCSTART-`` lines mark document boundaries and also end a
    sentence (Dutch CoNLL-2002 has no blank line after them). Every token line must have as
    many columns as the first one, which catches a token with a stray space early.

    Args:
        path: the column file (optionally ``.gz``).
        token_column: column of the word form; negative counts from the end, as in Python.
        tag_column: column of the tag to learn; ``-1`` is the last column.
        require_tags: if false, a file whose tag column does not exist or is the token column
            (e.g. a one-column file of tokens to tag) gives ``tags=None``.

    Raises:
        CorpusFormatError: column counts differ, or a requested column does not exist.
    """
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    n_columns = 0
    first_line = 0
    token_index = 0
    tag_index: int | None = None
    for lineno, line in open_text(path):
        fields = split_fields(line)
        if fields and LINE_BREAK.search(line):
            raise line_break_error(path, lineno, line, 0, "a token or tag")
        if fields and OTHER_SPACE.search(line):
            check_tokens(path, lineno, fields, "column")  # only NBSP: no token or tag
        if not fields or fields[0] == _DOCSTART:
            if tokens:
                yield Sentence(tuple(tokens), None if tag_index is None else tuple(tags), start)
                tokens, tags = [], []
            continue
        if len(fields) != n_columns:
            if n_columns:
                raise CorpusFormatError(
                    path,
                    lineno,
                    f"expected {n_columns} columns like line {first_line}, found {len(fields)}",
                )
            n_columns, first_line = len(fields), lineno
            token_index = _resolve_column(path, lineno, "token", token_column, n_columns)
            tag_index = _tag_index(
                path, lineno, tag_column, n_columns, token_column, token_index, require_tags
            )
        if not tokens:
            start = lineno
        tokens.append(fields[token_index])
        if tag_index is not None:
            tags.append(fields[tag_index])
    if tokens:
        yield Sentence(tuple(tokens), None if tag_index is None else tuple(tags), start)


def _tag_index(
    path: str | os.PathLike[str],
    lineno: int,
    tag_column: int,
    n_columns: int,
    token_column: int,
    token_index: int,
    require_tags: bool,
) -> int | None:
    """Resolve the tag column; ``None`` means "no tags", allowed only without require_tags."""
    index = tag_column if tag_column >= 0 else n_columns + tag_column
    if not require_tags and (index == token_index or not 0 <= index < n_columns):
        return None
    index = _resolve_column(path, lineno, "tag", tag_column, n_columns)
    if index == token_index:
        plural = "column" if n_columns == 1 else "columns"
        raise CorpusFormatError(
            path,
            lineno,
            f"tag column {tag_column} is the token column {token_column}: the line has "
            f"{n_columns} {plural}, and training/evaluation need a separate tag column",
        )
    return index


_EXPECTED = {
    "conllu": "a CoNLL-U corpus (10 tab-separated fields per word, blank line between sentences)",
    "columns": "one token per line in whitespace-separated columns, blank line between sentences",
    "text": "one sentence per line, tokens separated by spaces",
    "jsonl": 'one JSON object per line, with "tokens": a list of strings',
}
_ONLY = {
    "conllu": "the file has only comment lines, multiword-token or empty-node lines",
    "columns": "the file has only -DOCSTART- and blank lines",
    "text": "the file has no tokens separated by spaces or tabs",
    "jsonl": "the file has only blank lines",
}


def iter_corpus(
    path: str | os.PathLike[str],
    format: CorpusFormat,
    *,
    tag_field: Literal["upos", "xpos"] = "upos",
    token_column: int = 0,
    tag_column: int = -1,
    require_tags: bool = True,
    missing_tag: str | None = None,
) -> Iterator[Sentence]:
    """The sentences of a corpus in the given format, read lazily; refuses one without any.

    An empty file is nearly always a wrong path or a failed download, so it is an error here
    rather than a confusing zero-division or empty vocabulary later (or an empty output).

    Raises:
        CorpusFormatError: the file is malformed, empty, or holds no sentence.
        ConfigError: ``jsonl`` where tags are required.
        ValueError: ``format`` is not one of the known formats.
    """
    if format == "conllu":
        sentences = iter_conllu(path, tag_field, require_tags, missing_tag)
    elif format == "columns":
        sentences = iter_columns(
            path, token_column=token_column, tag_column=tag_column, require_tags=require_tags
        )
    elif format == "text":
        sentences = iter_plain(path)
    elif format == "jsonl" and not require_tags:
        sentences = iter_jsonl(path)
    elif format == "jsonl":
        raise ConfigError(
            f"{os.fspath(path)}: JSON Lines carry no tags: use them as text to tag "
            "(data.predict_format jsonl); training and evaluation files need conllu or columns"
        )
    else:
        raise ValueError(f"format must be 'conllu', 'columns', 'text' or 'jsonl', got {format!r}")
    found = False
    for sentence in sentences:
        found = True
        yield sentence
    if not found:
        name = os.fspath(path)
        if name != STDIN and any(line.strip() for _, line in open_text(path)):
            raise CorpusFormatError(path, None, f"no sentences found: {_ONLY[format]}")
        raise CorpusFormatError(path, None, f"file is empty, expected {_EXPECTED[format]}")


def read_corpus(
    path: str | os.PathLike[str], format: CorpusFormat, **options: Any
) -> list[Sentence]:
    """All sentences of a corpus, for splits that are counted and bucketed as a whole.

    Takes the same keyword options as :func:`iter_corpus` (``tag_field``, ``token_column``,
    ``tag_column``, ``require_tags``).
    """
    return list(iter_corpus(path, format, **options))
