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
