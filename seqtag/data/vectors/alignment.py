"""Pretrained vectors meet a vocabulary: the embedding matrix, and how much of it they cover.

Reading a vector file (:mod:`seqtag.data.vectors.embeddings`) knows nothing of vocabularies; this
module turns a :class:`~seqtag.data.vectors.embeddings.PretrainedVectors` table into the rows of one
vocabulary, picks the evaluation words worth adding to it because they have a vector, and
reports the coverage a user needs to judge the vectors (and the lookup method that found
each word). Plain numpy: no gensim, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from seqtag.data.vectors.embeddings import PretrainedVectors
from seqtag.data.vocab import LOOKUP_METHODS, PAD_ID
from seqtag.errors import VectorFormatError

logger = logging.getLogger(__name__)

#: How a vocabulary word found its vector: a :func:`~seqtag.data.vocab.lookup_forms` method,
#: or ``subword`` (built by a fastText model from its character n-grams).
METHODS: tuple[str, ...] = (*LOOKUP_METHODS, "subword")
_METHOD_LABELS = {"exact": "exact", "lower": "lowercase", "digits": "digits", "subword": "subword"}


@dataclass
class CoverageReport:
    """How much of a vocabulary (and of its training tokens) found a pretrained vector.

    ``tokens_total`` counts every token of ``word_counts`` (so rare words left out of the
    vocabulary count as uncovered); both token fields are ``None`` without ``word_counts``.
    """

    types_total: int
    types_found: int
    tokens_total: int | None = None
    tokens_found: int | None = None
    by_method: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))

    @property
    def type_coverage(self) -> float:
        return self.types_found / self.types_total if self.types_total else 0.0

    @property
    def token_coverage(self) -> float | None:
        if self.tokens_total is None or self.tokens_found is None:
            return None
        return self.tokens_found / self.tokens_total if self.tokens_total else 0.0

    def __str__(self) -> str:
        text = (
            f"pretrained vectors cover {100 * self.type_coverage:.1f}% of "
            f"{self.types_total:,} vocabulary types"
        )
        token_coverage = self.token_coverage
        if token_coverage is not None:
            text += f" and {100 * token_coverage:.1f}% of {self.tokens_total:,} training tokens"
        methods = [
            f"{_METHOD_LABELS.get(name, name)} {count:,}"
            for name, count in self.by_method.items()
            if count or name == "exact"
        ]
        return f"{text} ({', '.join(methods)})"


def align_vectors(
    vectors: PretrainedVectors,
    vocabulary_words: Sequence[str],
    *,
    expected_dim: int | None = None,
    special: int = 2,
    seed: int = 0,
    word_counts: Mapping[str, int] | None = None,
) -> tuple[np.ndarray, CoverageReport]:
    """The embedding matrix ``float32 [len(vocabulary_words), dim]`` for a vocabulary.

    The first ``special`` entries are not words: padding (row :data:`~seqtag.data.vocab.PAD_ID`)
    gets a zero row, the others (unknown) a random row. Words found by
    :meth:`PretrainedVectors.lookup` get their vector; the rest get random normal rows with the
    standard deviation of the pretrained matrix, so they start on the same scale (seeded with
    ``seed``: the same every run).

    Raises:
        VectorFormatError: ``expected_dim`` is given and differs from the vectors' dimension.
    """
    dim = vectors.dim
    if expected_dim is not None and expected_dim != dim:
        raise VectorFormatError(
            vectors.path,
            None,
            f"vectors have dimension {dim}, but the model expects {expected_dim}; use vectors "
            f"of dimension {expected_dim} or set the word embedding size to {dim}",
        )
    if not 0 <= special <= len(vocabulary_words):
        raise ValueError(f"special={special} must lie between 0 and the vocabulary size")
    rng = np.random.default_rng(seed)
    std = float(vectors.matrix.std())
    matrix = rng.normal(0.0, std, size=(len(vocabulary_words), dim)).astype(np.float32)
    if special:
        matrix[PAD_ID] = 0.0

    rows: list[int] = []
    sources: list[int] = []
    by_method = dict.fromkeys(METHODS, 0)
    tokens_found = 0
    for row in range(special, len(vocabulary_words)):
        word = vocabulary_words[row]
        source, method = vectors.find(word)
        if source is not None:
            rows.append(row)
            sources.append(source)
        elif vectors.oov_vector is not None and (vector := vectors.oov_vector(word)) is not None:
            matrix[row] = vector
            method = "subword"
        else:
            continue
        by_method[method] += 1
        if word_counts is not None:
            tokens_found += word_counts.get(word, 0)
    matrix[rows] = vectors.matrix[sources]

    report = CoverageReport(
        types_total=len(vocabulary_words) - special,
        types_found=sum(by_method.values()),
        tokens_total=sum(word_counts.values()) if word_counts is not None else None,
        tokens_found=tokens_found if word_counts is not None else None,
        by_method=by_method,
    )
    logger.info("%s (%s)", report, vectors.path)
    return matrix, report


def pretrained_words_in(vectors: PretrainedVectors, candidate_words: Iterable[str]) -> set[str]:
    """The candidates that :meth:`PretrainedVectors.lookup` finds a vector for.

    Used to put dev/test words that have a pretrained vector into the vocabulary, so they
    keep that vector instead of becoming unknown. With fastText ``.bin`` models every word
    with character n-grams qualifies.
    """
    found = set()
    for word in candidate_words:
        if vectors.find(word)[0] is not None or (
            vectors.oov_vector is not None and vectors.oov_vector(word) is not None
        ):
            found.add(word)
    return found
