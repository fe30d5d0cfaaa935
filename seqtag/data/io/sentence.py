"""One sentence as a reader yields it, and the one rule for splitting a line into fields.

Shared by the tagged formats (:mod:`seqtag.data.io.formats`) and the untagged ones
(:mod:`seqtag.data.io.untagged_formats`), so that every reader splits text the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence as read from a corpus file.

    Attributes:
        tokens: the word forms, in order.
        tags: one tag per token, or ``None`` when the input carried no tags (plain text, or
            ``require_tags=False`` and some tag missing).
        line: 1-based line number of the sentence's first token line, so later errors (an
            unknown tag, a bad BIO sequence) can point back into the file.
        extra: the other fields of a JSON Lines record, passed through to the output.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None
    line: int
    extra: dict | None = None


def split_fields(line: str) -> list[str]:
    """Split on runs of spaces and tabs only (``str.split()`` would also split on NBSP etc.)."""
    if "\t" in line:
        line = line.replace("\t", " ")
    fields = line.split(" ")
    if "" in fields:
        fields = [field for field in fields if field]
    return fields
