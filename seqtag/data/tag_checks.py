"""What a split's gold tags must be, checked as its file is read.

The marker of unknown tags must not be a real tag of the data (:func:`check_marker_is_no_tag`),
a span corpus's known tags must be valid in its declared scheme (:func:`check_corpus_tags`),
and a split must have known tags to learn from or to score (:class:`PartialScreen`). Each check
takes one pass, sentence by sentence, so a corpus can be checked as it streams past
(:func:`seqtag.data.splits.scan_split`), whether it is read into memory or counted for the
corpus cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from seqtag.data.schemes import check_declared_scheme, split_tag, validate_tags
from seqtag.errors import ConfigError, CorpusFormatError, TagSchemeError

log = logging.getLogger(__name__)


#: The 17 universal POS tags of Universal Dependencies (the UPOS column of CoNLL-U).
UPOS_TAGS = frozenset(
    [
        "ADJ",
        "ADP",
        "ADV",
        "AUX",
        "CCONJ",
        "DET",
        "INTJ",
        "NOUN",
        "NUM",
        "PART",
        "PRON",
        "PROPN",
        "PUNCT",
        "SCONJ",
        "SYM",
        "VERB",
        "X",
    ]
)


def check_marker_is_no_tag(missing_tag: str | None, scheme: str | None, upos: bool) -> None:
    """Refuse a missing-tag marker that is a real tag of the data.

    Its tokens would count as unknown: a model trained so never learns that tag (with
    ``missing_tag O`` on IOB2 data, a tag set without ``O``), and evaluation skips it. What is
    a real tag: with a span scheme, ``O`` and every ``B-``/``I-``/... tag of the scheme;
    for the UPOS column of CoNLL-U, the 17 universal tags (``_`` is CoNLL-U's own marker of a
    missing value). POS tags of column files and XPOS have no fixed tag set, so there any
    marker is taken at its word (and its tokens counted in the log).

    Raises:
        ConfigError: the marker is such a tag.
    """
    if missing_tag is None:
        return
    if scheme:
        try:
            split_tag(missing_tag, scheme)
        except TagSchemeError:
            return
        what = f"a tag of the {scheme} scheme"
    elif upos and missing_tag in UPOS_TAGS:
        what = "a universal POS tag (UPOS)"
    else:
        return
    raise ConfigError(
        f"data.missing_tag {missing_tag!r} is {what}, not a marker of unknown tags: its tokens "
        "would be neither learned nor scored; set data.missing_tag to the marker the data uses "
        "for unknown tags (such as _ or -), or to null"
    )


def check_gold_tags(
    path: str,
    sentences: Sequence[Any],
    scheme: str | None,
    format: str,
    tag_field: str,
    missing_tag: str | None,
) -> None:
    """The gold tags of a training or evaluation split: the marker is no real tag of the data
    (:func:`check_marker_is_no_tag`), and with a span scheme every known tag is valid in it
    and the file is in it (:func:`check_corpus_tags`)."""
    check_marker_is_no_tag(missing_tag, scheme, format == "conllu" and tag_field == "upos")
    if scheme:
        check_corpus_tags(path, sentences, scheme, format == "columns", missing_tag)


def check_corpus_tags(
    path: str, sentences: Sequence[Any], scheme: str, columns: bool, missing_tag: str | None
) -> None:
    """Refuse known tags that are not valid in the corpus scheme, or a file in another scheme.

    One pass over ``sentences`` (each is validated as the scheme check reads it), so they may
    be a lazy stream read once (:func:`seqtag.data.splits.scan_split`)."""

    def validated() -> Iterator[Any]:
        for sentence in sentences:
            try:
                validate_tags((t for t in sentence.tags if t != missing_tag), scheme)
            except TagSchemeError as err:
                raise CorpusFormatError(
                    path, sentence.line, f"in the sentence starting on this line: {err}"
                ) from None
            yield sentence

    check_declared_scheme(path, validated(), scheme, columns, missing_tag)


class PartialScreen:
    """Counts a split's unknown tags sentence by sentence; drops training sentences without a
    known tag.

    A sentence without any known tag teaches nothing, and most likely was never annotated: it
    is left out of training and said so (evaluation keeps it; the metrics skip it). A split
    where no sentence has a known tag is refused, naming the file: there is nothing to learn
    from, and nothing to score (evaluation would report an accuracy of 0 and an ECE of NaN
    over no token; ``seqtag calibrate`` refuses such a dev set for the same reason).

    Sentence by sentence (:meth:`keep`, then :meth:`finish` once), so a training corpus can be
    screened as it streams past (:func:`seqtag.data.splits.scan_split`).
    """

    def __init__(self, split: str, path: str, missing_tag: str | None) -> None:
        self.split = split
        self.path = path
        self.missing_tag = missing_tag
        self.sentences = self.unknown = self.empty = self.partial = 0

    def keep(self, sentence: Any) -> bool:
        """Count one sentence's unknown tags; whether the split keeps it."""
        self.sentences += 1
        if self.missing_tag is None:
            return True
        count = sentence.tags.count(self.missing_tag)
        if not count:
            return True
        self.unknown += count
        if count < len(sentence.tags):
            self.partial += 1
            return True
        self.empty += 1
        return self.split != "train"

    def finish(self) -> None:
        """Report the split's unknown tags; refuse a split without a known tag."""
        if not self.unknown:
            return
        log.info(
            "%s: %d tokens have an unknown tag (%r), in %d partially tagged sentences and %d "
            "sentences without a known tag",
            self.split,
            self.unknown,
            self.missing_tag,
            self.partial,
            self.empty,
        )
        if self.empty == self.sentences:
            purpose = "learn from" if self.split == "train" else "score"
            raise CorpusFormatError(
                self.path,
                None,
                f"no sentence has a known tag: every tag is the marker {self.missing_tag!r}, "
                f"so there is nothing to {purpose}",
            )
        if self.split == "train" and self.empty:
            log.warning(
                "%s: %d sentences have no known tag (every tag is %r): left out of training",
                self.path,
                self.empty,
                self.missing_tag,
            )
