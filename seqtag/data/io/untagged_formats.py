"""Text to tag that carries no tags: plain text (one sentence per line) and JSON Lines.

The line-break rules are those of :mod:`seqtag.data.io.formats` (see its docstring); these readers
are what ``seqtag predict`` reads besides the tagged formats, kept apart from them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from seqtag.data.io.sentence import Sentence, split_fields
from seqtag.data.io.text_files import (
    LINE_BREAK,
    OTHER_SPACE,
    check_tokens,
    describe_line_break,
    line_break_error,
    open_text,
    show_token,
)
from seqtag.errors import CorpusFormatError


def read_plain(path: str | os.PathLike[str]) -> list[Sentence]:
    """All sentences of a plain-text file (see :func:`iter_plain`)."""
    return list(iter_plain(path))


def iter_plain(path: str | os.PathLike[str]) -> Iterator[Sentence]:
    """Read one sentence per line, tokens separated by spaces or tabs, without tags.

    Blank lines are skipped rather than read as empty sentences (a tagger has nothing to do
    with them); each sentence keeps its own line number. A line break other than the line's
    end inside a token is refused (see the module's docstring), and so is a token of only
    whitespace such as a lone NBSP (:func:`~seqtag.data.io.text_files.token_problem`).
    """
    for lineno, line in open_text(path):
        fields = split_fields(line)
        if fields and LINE_BREAK.search(line):
            raise line_break_error(path, lineno, line, 0, "a token")
        if fields and OTHER_SPACE.search(line):
            check_tokens(path, lineno, fields)
        if fields:
            yield Sentence(tuple(fields), None, lineno)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[Sentence]:
    """Read JSON Lines: one object per line with a ``tokens`` list of strings.

    The object's other fields are kept (``Sentence.extra``) and written back with the tags, so
    ids and metadata travel through tagging. Blank lines are skipped; an empty ``tokens`` list
    is a sentence without words. A token holding a line break (``"\\n"``, ``"\\u2028"`` and
    the like, see the module's docstring) is refused: CoNLL output could not write it; so is a
    token of only whitespace or with a NUL (:func:`~seqtag.data.io.text_files.token_problem`).

    What is passed through must be writable as JSON again, exactly, so a record is refused
    (naming the file and line) when it holds what JSON Lines output could not carry: ``NaN``,
    ``Infinity`` or a number too large for a float (``1e999``; Python would write them as
    ``NaN`` and ``Infinity``, which are not JSON), a lone surrogate escape (``"\\ud800"``, not
    text that UTF-8 can encode), or nesting deeper than :data:`MAX_DEPTH` levels. A record
    that already holds a field seqtag writes itself (:data:`WRITTEN_FIELDS`: ``tags``,
    ``confidences``, ``spans``, ``uncertainty``) is refused too, naming the field: the output
    would otherwise carry the input's value beside (or instead of) seqtag's own, with nothing
    to tell them apart. Rename or drop such a field to tag the file (``jq -c 'del(.tags)'``).
    """
    for lineno, line in open_text(path):
        if not line.strip():
            continue
        record = _load(path, lineno, line)
        tokens = record.get("tokens") if isinstance(record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise CorpusFormatError(
                path, lineno, 'expected a JSON object with "tokens": a list of non-empty strings'
            )
        for number, token in enumerate(tokens, 1):
            found = LINE_BREAK.search(token)
            if found:
                raise CorpusFormatError(
                    path,
                    lineno,
                    f"{describe_line_break(found.group())} inside token {number}, "
                    f"{show_token(token)} (a token cannot hold a line break: replace it with a "
                    "space or remove it)",
                )
        check_tokens(path, lineno, tokens)
        written = next((field for field in WRITTEN_FIELDS if field in record), None)
        if written is not None:
            raise CorpusFormatError(
                path,
                lineno,
                f'the record already has "{written}", a field seqtag writes itself: rename or '
                f"remove it (e.g. jq -c 'del(.{written})') to tag this file",
            )
        extra = {key: value for key, value in record.items() if key != "tokens"}
        yield Sentence(tuple(tokens), None, lineno, extra)


#: Fields that seqtag writes into JSON Lines output (predictions and the uncertain file).
WRITTEN_FIELDS = ("tags", "confidences", "spans", "uncertainty")
#: The deepest nesting of lists and objects a record may have: far more than any metadata
#: needs, and far below the depth at which Python's JSON reader and writer give up.
MAX_DEPTH = 100

# A ``\uD800``-``\uDFFF`` escape: a surrogate, valid only as half of a pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotFinite(ValueError):
    """A number that JSON cannot write back (``NaN``, ``Infinity``, ``1e999``)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _constant(name: str) -> float:
    raise _NotFinite(name)


def _load(path: str | os.PathLike[str], lineno: int, line: str) -> Any:
    """One line's JSON value, refused unless JSON output can write it back as it was."""
    try:
        value = json.loads(line, parse_float=_finite, parse_constant=_constant)
    except _NotFinite as err:
        raise CorpusFormatError(
            path,
            lineno,
            f"{err.args[0]} is not a finite number: JSON has no NaN or infinity, and the "
            "output would not be JSON",
        ) from None
    except json.JSONDecodeError as err:
        raise CorpusFormatError(path, lineno, f"not valid JSON ({err.msg})") from None
    except RecursionError:
        raise CorpusFormatError(path, lineno, _too_deep()) from None
    except ValueError as err:  # an integer of more than 4,300 digits
        reason = str(err).partition(":")[0]
        raise CorpusFormatError(path, lineno, f"not usable JSON ({reason})") from None
    # Only a line with many brackets can nest deeply, only one with an escape hold a surrogate.
    deep = line.count("[") + line.count("{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(line):
        problem = _unwritable(value)
        if problem is not None:
            raise CorpusFormatError(path, lineno, problem)
    return value


def _too_deep() -> str:
    return f"JSON nested more than {MAX_DEPTH} levels deep"


def _unwritable(value: Any) -> str | None:
    """Nesting too deep or a lone surrogate in ``value``, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            found = None if item.isascii() else _SURROGATE.search(item)
            if found:
                return (
                    f"a lone surrogate escape (\\u{ord(found.group()):04x}) in a string, which "
                    "is not text: UTF-8 cannot encode it, so the output could not be written"
                )
        elif isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                return _too_deep()
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
    return None
