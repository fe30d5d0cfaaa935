"""DataSpec: what the data hands the model, once, before the network is built.

The build runs one way. :class:`~seqtag.TaggingDataModule` reads the training corpus and the
pretrained vectors and produces one frozen :class:`DataSpec`; :class:`~seqtag.SequenceTagger`
is built from it (in its constructor when given one, otherwise when a ``fit`` takes the model)
and keeps only the vocabularies, which go into every checkpoint.
Nothing flows back into the DataModule: a model restored from a checkpoint is the truth about
how text becomes ids, and the DataModule checks its own settings against it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqtag.data.counts import CorpusCounts
from seqtag.data.vocab import DEFAULT_MAX_WORD_LENGTH, Vocabularies, Vocabulary
from seqtag.errors import ConfigError

log = logging.getLogger(__name__)

#: Encoding settings and their values when neither the user nor a checkpoint sets them.
ENCODING_DEFAULTS = {
    "lowercase": False,
    "unknown_shapes": True,
    "max_word_length": DEFAULT_MAX_WORD_LENGTH,
}


@dataclass(frozen=True)
class DataSpec:
    """Vocabularies, initial word vectors and word frequencies: plain data, read-only.

    Attributes:
        vocabularies: words, tags (training scheme), characters and both tag schemes.
        embedding_matrix: pretrained vectors aligned to ``vocabularies.words``
            [len(words), dim], or ``None`` to learn embeddings from scratch.
        word_counts: training frequency of every word id [len(words)], for rare-word dropout.
        vectors_path: the vector file the matrix came from, for messages.
    """

    vocabularies: Vocabularies
    embedding_matrix: np.ndarray | None = None
    word_counts: np.ndarray | None = None
    vectors_path: str | None = None

    def __post_init__(self) -> None:
        rows = len(self.vocabularies.words)
        for name, expected_dims in (("embedding_matrix", 2), ("word_counts", 1)):
            array = getattr(self, name)
            if array is None:
                continue
            array = np.array(array, dtype=np.float32)  # a private, read-only copy
            if array.ndim != expected_dims or array.shape[0] != rows:
                raise ValueError(
                    f"DataSpec.{name} has shape {array.shape}; expected {rows} rows, one per "
                    "word of the vocabulary"
                )
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def embedding_dim(self) -> int | None:
        """Width of the pretrained vectors, or ``None`` without them."""
        return None if self.embedding_matrix is None else int(self.embedding_matrix.shape[1])


def check_agreement(vocabularies: Vocabularies, **settings: object) -> None:
    """Refuse data settings that contradict a trained model's vocabularies.

    ``settings`` are the DataModule's encoding options by name (``tag_scheme``,
    ``train_scheme``, ``lowercase``, ``unknown_shapes``, ``max_word_length``); ``None`` means
    "not set", which always agrees: the checkpoint decides.
    """
    trained = {
        "tag_scheme": vocabularies.corpus_scheme,
        "train_scheme": vocabularies.tag_scheme,
        "lowercase": vocabularies.lowercase,
        "unknown_shapes": vocabularies.words.unknown_shapes,
    }
    if vocabularies.chars is not None:  # otherwise the model never reads characters
        trained["max_word_length"] = vocabularies.max_word_length
    for name, setting in settings.items():
        if name in trained and setting is not None and setting != trained[name]:
            raise ConfigError(
                f"data.{name} is {setting!r}, but the model was trained with {trained[name]!r}: "
                f"the checkpoint decides how text is encoded, so remove data.{name} or set "
                f"it to {trained[name]!r}"
            )


def spec_from_counts(
    counts: CorpusCounts,
    other_words: Iterable[str],
    options: Mapping[str, Any],
    *,
    corpus_scheme: str | None,
    train_scheme: str | None,
) -> DataSpec:
    """Vocabularies and initial vectors from a training corpus's counts and the vector file.

    Words: every training word seen ``min_freq`` times, plus every word of ``other_words``
    (the other splits) and of the training split that has a pretrained vector, plus the
    ``vectors_top_k`` most frequent words of the vector table. Characters: those of the
    training text (used when the model has character features). Tags: the training tags, in
    the training scheme.

    Args:
        counts: the training corpus's counts (:class:`seqtag.data.counts.CorpusCounter`).
        other_words: tokens of the other splits, read only when there are vectors.
        options: the DataModule's settings (``min_freq``, ``vectors``, ``vectors_format``,
            ``vectors_cache``, ``vectors_top_k``, ``seed`` and the encoding settings).
        corpus_scheme: the scheme of the corpus files.
        train_scheme: the scheme the tags of ``counts`` are in, which the model predicts.
    """
    from seqtag.data.vectors.alignment import align_vectors, pretrained_words_in
    from seqtag.data.vectors.embeddings import load_vectors

    settings = dict(ENCODING_DEFAULTS)
    settings.update({key: options[key] for key in ENCODING_DEFAULTS if options[key] is not None})
    norm = str.lower if settings["lowercase"] else (lambda w: w)
    word_counts: Counter[str] = Counter()
    for word, n in counts.words.items():  # first-seen order is kept, as counting text does
        word_counts[norm(word)] += n
    extra: set[str] = set()
    vectors = None
    if options["vectors"]:
        vectors = load_vectors(
            options["vectors"], options["vectors_format"], cache=options["vectors_cache"]
        )
        candidates = set(word_counts)
        candidates.update(norm(word) for word in other_words)
        extra = pretrained_words_in(vectors, candidates)
        if options["vectors_top_k"]:
            extra.update(norm(w) for w in vectors.words[: options["vectors_top_k"]])
    words = Vocabulary.from_counts(
        word_counts,
        min_freq=options["min_freq"],
        extra=extra,
        fallback=True,
        unknown_shapes=settings["unknown_shapes"],
    )
    vocabularies = Vocabularies(
        words=words,
        tags=Vocabulary(sorted(counts.tags), pad=None, unk=None),
        chars=Vocabulary.from_counts(counts.chars),
        lowercase=settings["lowercase"],
        tag_scheme=train_scheme,
        corpus_scheme=corpus_scheme,
        max_word_length=settings["max_word_length"],
    )
    matrix = None
    if vectors is not None:
        matrix, _ = align_vectors(
            vectors,
            words.items,
            special=words.num_specials,
            word_counts=word_counts,
            seed=options["seed"],
        )
    log.info(
        "vocabularies: %d words, %d tags, %d characters",
        len(words),
        len(vocabularies.tags),
        len(vocabularies.chars),
    )
    return DataSpec(
        vocabularies=vocabularies,
        embedding_matrix=matrix,
        word_counts=np.array([word_counts.get(w, 0) for w in words.items], dtype=np.float32),
        vectors_path=options["vectors"],
    )
