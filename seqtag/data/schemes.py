"""Tag schemes for chunking and NER: validation, conversion, span extraction, CRF constraints.

Three schemes are supported, each tag being ``O`` or ``<prefix>-<type>``:

- ``iob1`` (CoNLL-2000/2003 originals): a chunk starts with ``I-``; ``B-`` is used only for a
  chunk that directly follows a chunk of the same type.
- ``iob2`` (alias ``bio``): every chunk starts with ``B-`` and continues with ``I-``.
- ``bioes`` (alias ``iobes``): ``B-``/``I-``/``E-`` for begin/inside/end, ``S-`` for a chunk of
  one token.

Chunks are read with the rules of ``conlleval.pl`` (which seqeval's default mode also follows),
so that scores match the published numbers even on ill-formed predictions: a chunk starts at
``B-``, or at ``I-`` after ``O``, after a different type, or at the sentence start; it ends
before ``O``, before the start of another chunk, or at the sentence end. A ``bioes`` sequence is
first read as ``iob2`` token by token (``S-`` as ``B-``, ``E-`` as ``I-``), the usual way of
scoring BIOES output with conlleval. Types may contain hyphens (``B-PER-X`` has type ``PER-X``).

Pure Python: no torch, so data preparation and tests can use it on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from seqtag.errors import CorpusFormatError, TagSchemeError

log = logging.getLogger(__name__)

TagScheme = Literal["iob1", "iob2", "bioes"]
Span = tuple[str, int, int]
"""A chunk as ``(type, start, end)``, token offsets in one sentence, ``end`` exclusive."""

SCHEMES: tuple[TagScheme, ...] = ("iob1", "iob2", "bioes")
OUTSIDE = "O"

_ALIASES: dict[str, TagScheme] = {
    "iob1": "iob1",
    "iob2": "iob2",
    "bio": "iob2",
    "bioes": "bioes",
    "iobes": "bioes",
}
_PREFIXES: dict[TagScheme, tuple[str, ...]] = {
    "iob1": ("B", "I"),
    "iob2": ("B", "I"),
    "bioes": ("B", "I", "E", "S"),
}
# How each prefix reads in conlleval's iob rules: True if it always starts a chunk.
_STARTS_CHUNK = {"B": True, "S": True, "I": False, "E": False}


def normalize_scheme(name: str) -> TagScheme:
    """Map a user-given scheme name (any case, ``bio``/``iobes`` aliases) to a :data:`TagScheme`."""
    scheme = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if scheme is None:
        raise TagSchemeError(
            f"unknown tag scheme {name!r}: expected one of iob1, iob2 (alias bio), "
            "bioes (alias iobes)"
        )
    return scheme


def _bad_tag(tag: object, scheme: TagScheme) -> TagSchemeError:
    prefixes = "/".join(f"{p}-" for p in _PREFIXES[scheme])
    return TagSchemeError(
        f"tag {tag!r} is not valid in the {scheme} scheme: "
        f"expected O or {prefixes} followed by a type"
    )


def split_in_scheme(tag: str, scheme: TagScheme) -> tuple[str, str | None]:
    """:func:`split_tag` for a scheme already normalised (:func:`normalize_scheme`): the hot
    path of span extraction, public for the CRF's span tables."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    if isinstance(tag, str):
        prefix, sep, type_ = tag.partition("-")
        if sep and type_ and prefix in _PREFIXES[scheme]:
            return prefix, type_
    raise _bad_tag(tag, scheme)


def split_tag(tag: str, scheme: TagScheme | str = "iob2") -> tuple[str, str | None]:
    """Split ``"B-PER"`` into ``("B", "PER")`` and ``"O"`` into ``("O", None)``.

    Raises :class:`~seqtag.errors.TagSchemeError` naming the tag when it is not ``O`` or a
    prefix of ``scheme`` followed by ``-`` and a non-empty type (``X-PER``, ``B-``, ``PER``).
    """
    return split_in_scheme(tag, normalize_scheme(scheme))


def validate_tags(tags: Iterable[str], scheme: TagScheme | str) -> None:
    """Raise :class:`~seqtag.errors.TagSchemeError` for the first tag not valid in ``scheme``."""
    scheme = normalize_scheme(scheme)
    for tag in tags:
        split_in_scheme(tag, scheme)


def get_spans(tags: Sequence[str], scheme: TagScheme | str = "iob2") -> list[Span]:
    """Chunks of one sentence as ``(type, start, end_exclusive)``, exactly as conlleval reads them.

    Ill-formed sequences are read the conlleval way rather than rejected, because predictions
    are scored as they are: ``I-PER I-LOC`` is two chunks, ``B-PER I-LOC`` too, and a lone
    ``I-PER`` (or ``E-PER`` in ``bioes``) is a chunk of one token. Tags not valid in ``scheme``
    raise :class:`~seqtag.errors.TagSchemeError`.
    """
    scheme = normalize_scheme(scheme)
    spans: list[Span] = []
    open_type: str | None = None  # type of the chunk the previous token is in
    open_start = 0
    for i, tag in enumerate(tags):
        prefix, type_ = split_in_scheme(tag, scheme)
        if type_ is not None and not _STARTS_CHUNK[prefix] and type_ == open_type:
            continue  # I-/E- of the same type as the previous token: the chunk goes on
        if open_type is not None:
            spans.append((open_type, open_start, i))
        open_type, open_start = type_, i
    if open_type is not None:
        spans.append((open_type, open_start, len(tags)))
    return spans


def _tags_from_spans(spans: Iterable[Span], length: int, scheme: TagScheme) -> list[str]:
    """The well-formed tag sequence of ``scheme`` for sorted, disjoint spans."""
    tags = [OUTSIDE] * length
    prev_type: str | None = None
    prev_end = -1
    for type_, start, end in spans:
        if scheme == "bioes" and end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            if scheme == "iob1":
                adjacent = start == prev_end and type_ == prev_type
                tags[start] = f"B-{type_}" if adjacent else f"I-{type_}"
            else:
                tags[start] = f"B-{type_}"
            for i in range(start + 1, end):
                tags[i] = f"I-{type_}"
            if scheme == "bioes":
                tags[end - 1] = f"E-{type_}"
        prev_type, prev_end = type_, end
    return tags


def convert_tags(
    tags: Sequence[str], source: TagScheme | str, target: TagScheme | str
) -> list[str]:
    """Rewrite one sentence's tags from ``source`` to ``target``, keeping every chunk.

    Conversion goes through the chunks (:func:`get_spans` under ``source``, then re-emitted), so
    the result is always well-formed in ``target`` even for ill-formed input: ``I-PER I-LOC``
    in ``iob2`` becomes ``B-PER B-LOC``. Well-formed input converts losslessly both ways;
    converting a sequence to its own scheme puts it in canonical form.
    """
    return _tags_from_spans(get_spans(tags, source), len(tags), normalize_scheme(target))


_Parsed = tuple[str, str | None] | None  # None: a tag outside the scheme, left unconstrained


def _transition_allowed(prev: _Parsed, cur: _Parsed, scheme: TagScheme) -> bool:
    """Whether ``cur`` may follow ``prev`` when well-formed (``O`` stands for the edges)."""
    if prev is None or cur is None:
        return True
    (prev_prefix, prev_type), (cur_prefix, cur_type) = prev, cur
    prev_in_chunk_of_cur_type = prev_prefix in ("B", "I") and prev_type == cur_type
    if scheme == "iob2":
        return cur_prefix != "I" or prev_in_chunk_of_cur_type
    if scheme == "iob1":
        return cur_prefix != "B" or prev_in_chunk_of_cur_type
    if prev_prefix in ("B", "I"):  # bioes: an open chunk must continue with I- or E- of its type
        return cur_prefix in ("I", "E") and prev_type == cur_type
    return cur_prefix in (OUTSIDE, "B", "S")


def allowed_transitions(
    tags: Sequence[str], scheme: TagScheme | str
) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """Transition constraints for decoding only well-formed sequences of ``scheme`` with a CRF.

    Returns ``(allowed, allowed_start, allowed_end)``: ``allowed[i][j]`` says whether tag ``j``
    may follow tag ``i``, ``allowed_start[j]`` whether a sentence may begin with tag ``j``, and
    ``allowed_end[i]`` whether it may end with tag ``i``; indices are positions in ``tags``.
    A sequence obeys all of them exactly when :func:`convert_tags` to its own scheme leaves it
    unchanged. Entries that are not tags of ``scheme`` (such as ``<pad>``) are unconstrained.
    """
    scheme = normalize_scheme(scheme)
    parsed: list[_Parsed] = []
    for tag in tags:
        try:
            parsed.append(split_in_scheme(tag, scheme))
        except TagSchemeError:
            parsed.append(None)
    edge: _Parsed = (OUTSIDE, None)
    allowed = [[_transition_allowed(a, b, scheme) for b in parsed] for a in parsed]
    allowed_start = [_transition_allowed(edge, b, scheme) for b in parsed]
    allowed_end = [_transition_allowed(a, edge, scheme) for a in parsed]
    return allowed, allowed_start, allowed_end


def scheme_tags(types: Iterable[str], scheme: TagScheme | str) -> list[str]:
    """Every tag of ``scheme`` over chunk ``types``, ``O`` first, then by type and prefix."""
    prefixes = _PREFIXES[normalize_scheme(scheme)]
    return [OUTSIDE, *(f"{prefix}-{type_}" for type_ in sorted(types) for prefix in prefixes)]


def ill_formed_positions(
    tags: Sequence[str], scheme: TagScheme | str, missing_tag: str | None = None
) -> list[int]:
    """Positions whose tag may not follow the previous one (or open, or end, a sentence).

    ``I-X`` after ``O`` in IOB2, for instance: conversion and scoring read it as the start of a
    chunk (conlleval's rule), so a few such tags are harmless, but a file where most chunks
    start that way is in another scheme than the one declared (IOB1 declared as IOB2 makes a
    CRF learn from forbidden transitions). Position ``len(tags)`` stands for the sentence's
    end (an open BIOES chunk). Tags equal to ``missing_tag`` (unknown) could be anything, so
    no transition to or from them is ill-formed.
    """
    scheme = normalize_scheme(scheme)
    edge: _Parsed = (OUTSIDE, None)
    parsed = [None if tag == missing_tag else split_in_scheme(tag, scheme) for tag in tags]
    bad = [
        i
        for i, (prev, cur) in enumerate(zip([edge, *parsed], [*parsed, edge], strict=True))
        if not _transition_allowed(prev, cur, scheme)
    ]
    return bad


def _chunk_count(tags: Sequence[str], scheme: TagScheme | str, missing_tag: str | None) -> int:
    """Chunks of the runs of known tags (those not ``missing_tag``) of one sentence."""
    if missing_tag is None or missing_tag not in tags:
        return len(get_spans(tags, scheme))
    count, run = 0, []
    for tag in [*tags, missing_tag]:
        if tag == missing_tag:
            count += len(get_spans(run, scheme))
            run = []
        else:
            run.append(tag)
    return count


def check_declared_scheme(
    path: str,
    sentences: Sequence[Any],
    scheme: TagScheme | str,
    one_token_per_line: bool,
    missing_tag: str | None = None,
) -> None:
    """Refuse a file that is not in its declared scheme; warn about a few repaired tags.

    More than a fifth of the chunks starting with a tag the scheme forbids there means
    another scheme (IOB1 declared as IOB2, say): an error naming the first such token.
    Fewer are read as chunk starts (conlleval's rule), and said so. ``sentences`` have
    ``tags`` and ``line`` (the first token's line); with one token per line (column files) the
    error names the offending token's own line. Unknown tags (``missing_tag``) are left out:
    they count as no chunk and never as ill-formed.
    """
    chunks = found = 0
    first: tuple[Any, int] | None = None
    for sentence in sentences:
        bad = ill_formed_positions(sentence.tags, scheme, missing_tag)
        chunks += _chunk_count(sentence.tags, scheme, missing_tag)
        found += len(bad)
        if bad and first is None:
            first = (sentence, bad[0])
    if first is None:
        return
    sentence, position = first
    tags = sentence.tags
    after = tags[position - 1] if position else "the sentence's start"
    here = tags[position] if position < len(tags) else "the sentence's end"
    # Column files have one token per line; CoNLL-U may interleave multiword-token lines.
    line = sentence.line + min(position, len(tags) - 1) if one_token_per_line else sentence.line
    share = found / max(chunks, 1)
    what = f"{here!r} after {after!r} is not well-formed {scheme}"
    if share > 0.2:
        raise CorpusFormatError(
            path,
            line,
            f"{what}, and {found} of the file's {chunks} chunks ({share:.0%}) are like it: the "
            "file looks like another scheme; set data.tag_scheme to the file's own (iob1, "
            "iob2 or bioes)",
        )
    log.warning(
        "%s:%d: %s; %d such tags in %d chunks are read as the start of a chunk, as conlleval does",
        path,
        line,
        what,
        found,
        chunks,
    )
