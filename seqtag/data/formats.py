"""Corpus file syntax: CoNLL-U, whitespace-separated columns and plain text -> sentences.

This module knows file formats and nothing else (no torch, no vocabularies, no tag schemes), so
it can be tested on tiny files and reused by prediction. Every malformed input raises
:class:`~seqtag.errors.CorpusFormatError` naming the file and the 1-based line, because a user
with a 200,000-line corpus needs to know exactly where to look.

Readers return whole lists: the corpora we train on fit in memory many times over, and a list
lets the caller count, sort and bucket sentences.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from seqtag.errors import CorpusFormatError

__all__ = [
    "CorpusFormat",
    "Sentence",
    "open_text",
    "read_columns",
    "read_conllu",
    "read_corpus",
    "read_plain",
    "write_columns",
]

CorpusFormat = Literal["conllu", "columns", "text"]

_DOCSTART = "-DOCSTART-"
# Multiword tokens ("1-2") and empty nodes ("8.1") are not words of the surface sentence.
_SKIPPED_ID = re.compile(r"[0-9]+(?:-[0-9]+|\.[0-9]+)\Z")


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence as read from a corpus file.

    Attributes:
        tokens: the word forms, in order.
        tags: one tag per token, or ``None`` when the input carried no tags (plain text, or
            ``require_tags=False`` and some tag missing).
        line: 1-based line number of the sentence's first token line, so later errors (an
            unknown tag, a bad BIO sequence) can point back into the file.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None
    line: int


def open_text(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` from a UTF-8 text file, ``.gz`` opened transparently.

    Lines are split on ``\\n`` only and decoded one by one, so an encoding error names the line
    it is on (``str.splitlines`` would also split on form feeds and Unicode separators, which
    can occur inside tokens). The trailing newline and CR are removed; a UTF-8 BOM at the very
    start is dropped.

    Raises:
        CorpusFormatError: the path is missing or a directory, the gzip stream is corrupt, or a
            line is not valid UTF-8.
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise CorpusFormatError(name, None, "is a directory, expected a file")
    try:
        raw = gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise CorpusFormatError(name, None, "no such file") from None
    except PermissionError:
        raise CorpusFormatError(name, None, "permission denied") from None
    with raw:
        try:
            for lineno, data in enumerate(raw, 1):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _decode_error(name, lineno, data, err) from None
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text.rstrip("\r\n")
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise CorpusFormatError(name, None, f"corrupt or truncated gzip file ({err})") from None


def _decode_error(
    path: str, lineno: int, data: bytes, err: UnicodeDecodeError
) -> CorpusFormatError:
    """Describe an undecodable byte by its value and 1-based character column."""
    prefix = data[: err.start].decode("utf-8", errors="replace")
    if lineno == 1 and prefix.startswith("\ufeff"):
        prefix = prefix[1:]
    byte = data[err.start]
    return CorpusFormatError(
        path,
        lineno,
        f"invalid UTF-8 (byte 0x{byte:02x} at column {len(prefix) + 1}); "
        "the file must be UTF-8 encoded",
    )


def _split_fields(line: str) -> list[str]:
    """Split on runs of spaces and tabs only (``str.split()`` would also split on NBSP etc.)."""
    if "\t" in line:
        line = line.replace("\t", " ")
    fields = line.split(" ")
    if "" in fields:
        fields = [field for field in fields if field]
    return fields


def read_conllu(
    path: str | os.PathLike[str],
    tag_field: Literal["upos", "xpos"] = "upos",
    require_tags: bool = True,
) -> list[Sentence]:
    """Read the words of a CoNLL-U file with their UPOS or XPOS tags.

    Comment lines, multiword-token lines (``1-2``) and empty nodes (``8.1``) are skipped, since
    a tagger labels the syntactic words. Trailing spaces and CRLF line ends are tolerated.

    Args:
        path: the ``.conllu`` file (optionally ``.gz``).
        tag_field: which column holds the tags to learn.
        require_tags: if true, a missing tag (``_`` or empty) is an error, as training and
            evaluation need every tag; if false, such a sentence gets ``tags=None``.

    Raises:
        CorpusFormatError: a line does not follow CoNLL-U.
    """
    if tag_field not in ("upos", "xpos"):
        raise ValueError(f"tag_field must be 'upos' or 'xpos', got {tag_field!r}")
    tag_index = 3 if tag_field == "upos" else 4
    tag_name = tag_field.upper()
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    tags_missing = False
    for lineno, line in open_text(path):
        line = line.rstrip(" \t\r")
        if not line:
            if tokens:
                sentences.append(
                    Sentence(tuple(tokens), None if tags_missing else tuple(tags), start)
                )
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
        tag = fields[tag_index]
        if tag == "_" or not tag:
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
        sentences.append(Sentence(tuple(tokens), None if tags_missing else tuple(tags), start))
    return sentences


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
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    n_columns = 0
    first_line = 0
    token_index = 0
    tag_index: int | None = None
    for lineno, line in open_text(path):
        fields = _split_fields(line)
        if not fields or fields[0] == _DOCSTART:
            if tokens:
                sentences.append(
                    Sentence(tuple(tokens), None if tag_index is None else tuple(tags), start)
                )
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
        sentences.append(Sentence(tuple(tokens), None if tag_index is None else tuple(tags), start))
    return sentences


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


def read_plain(path: str | os.PathLike[str]) -> list[Sentence]:
    """Read one sentence per line, tokens separated by spaces or tabs, without tags.

    Blank lines are skipped rather than read as empty sentences (a tagger has nothing to do
    with them); each sentence keeps its own line number.
    """
    sentences: list[Sentence] = []
    for lineno, line in open_text(path):
        fields = _split_fields(line)
        if fields:
            sentences.append(Sentence(tuple(fields), None, lineno))
    return sentences


_EXPECTED = {
    "conllu": "a CoNLL-U corpus (10 tab-separated fields per word, blank line between sentences)",
    "columns": "one token per line in whitespace-separated columns, blank line between sentences",
    "text": "one sentence per line, tokens separated by spaces",
}
_ONLY = {
    "conllu": "the file has only comment lines, multiword-token or empty-node lines",
    "columns": "the file has only -DOCSTART- and blank lines",
    "text": "the file has no tokens separated by spaces or tabs",
}


def read_corpus(
    path: str | os.PathLike[str],
    format: CorpusFormat,
    *,
    tag_field: Literal["upos", "xpos"] = "upos",
    token_column: int = 0,
    tag_column: int = -1,
    require_tags: bool = True,
) -> list[Sentence]:
    """Read a corpus in the given format and refuse one without sentences.

    An empty training or evaluation file is nearly always a wrong path or a failed download, so
    it is an error here rather than a confusing zero-division or empty vocabulary later.

    Raises:
        CorpusFormatError: the file is malformed, empty, or holds no sentence.
        ValueError: ``format`` is not one of the known formats.
    """
    if format == "conllu":
        sentences = read_conllu(path, tag_field=tag_field, require_tags=require_tags)
    elif format == "columns":
        sentences = read_columns(
            path, token_column=token_column, tag_column=tag_column, require_tags=require_tags
        )
    elif format == "text":
        sentences = read_plain(path)
    else:
        raise ValueError(f"format must be 'conllu', 'columns' or 'text', got {format!r}")
    if not sentences:
        # Only on this rare path is the file read a second time, to tell the two cases apart.
        if any(line.strip() for _, line in open_text(path)):
            raise CorpusFormatError(path, None, f"no sentences found: {_ONLY[format]}")
        raise CorpusFormatError(path, None, f"file is empty, expected {_EXPECTED[format]}")
    return sentences


def write_columns(
    sentences: Iterable[Sentence | tuple[Sequence[str], Sequence[str] | None]],
    stream: TextIO,
) -> None:
    """Write ``token<TAB>tag`` lines with a blank line after each sentence.

    The output reads back with :func:`read_columns` (and conlleval-style scorers) as long as
    tokens contain no spaces. Sentences without tags are written as one token per line.

    Raises:
        ValueError: tokens and tags differ in length, or a field contains a tab or newline
            (which would silently corrupt the output).
    """
    for item in sentences:
        tokens, tags = (item.tokens, item.tags) if isinstance(item, Sentence) else item
        if tags is not None and len(tags) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags: {list(tokens)[:5]}...")
        fields = tokens if tags is None else [*tokens, *tags]
        for field in fields:
            if "\t" in field or "\n" in field or "\r" in field:
                raise ValueError(f"field {field!r} contains a tab or line break")
        if tags is None:
            stream.write("".join(f"{token}\n" for token in tokens))
        else:
            pairs = zip(tokens, tags, strict=True)
            stream.write("".join(f"{token}\t{tag}\n" for token, tag in pairs))
        stream.write("\n")
