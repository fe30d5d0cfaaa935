"""DataSpec: what the data hands the model, once, before the network is built.

The build runs one way. :class:`~seqtag.TaggingDataModule` reads the training corpus and the
pretrained vectors and produces one frozen :class:`DataSpec`; :class:`~seqtag.SequenceTagger`
is built from it (in its constructor when given one, otherwise in Lightning's
``configure_model`` hook) and keeps only the vocabularies, which go into every checkpoint.
Nothing flows back into the DataModule: a model restored from a checkpoint is the truth about
how text becomes ids, and the DataModule checks its own settings against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtag.data.vocab import Vocabularies
from seqtag.errors import ConfigError

#: Encoding settings and their values when neither the user nor a checkpoint sets them.
ENCODING_DEFAULTS = {"lowercase": False, "unknown_shapes": True, "max_word_length": 30}


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
