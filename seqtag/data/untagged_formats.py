"""Text to tag that carries no tags: plain text (one sentence per line) and JSON Lines.

The line-break rules are those of :mod:`seqtag.data.formats` (see its docstring); these readers
are what ``seqtag predict`` reads besides the tagged formats, kept apart from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from seqtag.data.sentence import Sentence, split_fields
from seqtag.data.text_files import LINE_BREAK, describe_line_break, line_break_error, open_text
from seqtag.errors import CorpusFormatError


def read_plain(path: str | os.PathLike[str]) -> list[Sentence]:
    """All sentences of a plain-text file (see :func:`iter_plain`)."""
    return list(iter_plain(path))


def iter_plain(path: str | os.PathLike[str]) -> Iterator[Sentence]:
    """Read one sentence per line, tokens separated by spaces or tabs, without tags.

    Blank lines are skipped rather than read as empty sentences (a tagger has nothing to do
    with them); each sentence keeps its own line number. A line break other than the line's
    end inside a token is refused (see the module's docstring).
    """
    for lineno, line in open_text(path):
        fields = split_fields(line)
        if fields and LINE_BREAK.search(line):
            raise line_break_error(path, lineno, line, 0, "a token")
        if fields:
            yield Sentence(tuple(fields), None, lineno)


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[Sentence]:
    """Read JSON Lines: one object per line with a ``tokens`` list of strings.

    The object's other fields are kept (``Sentence.extra``) and written back with the tags, so
    ids and metadata travel through tagging. Blank lines are skipped; an empty ``tokens`` list
    is a sentence without words. A token holding a line break (``"\\n"``, ``"\\u2028"`` and
    the like, see the module's docstring) is refused: CoNLL output could not write it.
    """
    for lineno, line in open_text(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(path, lineno, f"not valid JSON ({err.msg})") from None
        tokens = record.get("tokens") if isinstance(record, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise CorpusFormatError(
                path, lineno, 'expected a JSON object with "tokens": a list of non-empty strings'
            )
        for number, token in enumerate(tokens, 1):
            found = LINE_BREAK.search(token)
            if found:
                shown = repr(token) if len(token) <= 40 else repr(token[:40]) + "..."
                raise CorpusFormatError(
                    path,
                    lineno,
                    f"{describe_line_break(found.group())} inside token {number}, {shown} (a "
                    "token cannot hold a line break: replace it with a space or remove it)",
                )
        extra = {key: value for key, value in record.items() if key != "tokens"}
        yield Sentence(tuple(tokens), None, lineno, extra)
