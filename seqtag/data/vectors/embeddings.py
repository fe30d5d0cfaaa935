"""Pretrained word vectors: read any supported file into plain numpy data.

This is the only module of seqtag that imports gensim (lazily, inside the loaders), so the
rest of the package works with plain numpy arrays. gensim reads what needs it: word2vec
binary files, fastText ``.bin`` models (with their subword tables) and gensim's own pickles;
:mod:`seqtag.data.vectors.files` sniffs formats and parses the text formats without it. Every
way a vector file can be wrong ends in a :class:`~seqtag.errors.VectorFormatError` that names
the file (and the line, where one is known) and says what was expected, never in a bare gensim
or numpy traceback.

Lookups follow :func:`seqtag.data.vocab.lookup_forms` (exact, lowercase, digits normalised to
``0``), as vocabularies do, so a word's vector and its vocabulary row come from the same
spelling. Aligning vectors to a vocabulary is :mod:`seqtag.data.vectors.alignment`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqtag.data.vectors.cache import read_cached, write_cached
from seqtag.data.vectors.files import (
    FAMILY,
    FASTTEXT_MAGIC,
    FORMATS,
    NATIVE_SUFFIXES,
    VectorFormat,
    announced_shape,
    check_table,
    check_word2vec_binary_entries,
    check_word2vec_binary_header,
    describe_format,
    drop_duplicate_words,
    is_text,
    read_head,
    read_text_vectors,
    sniff_format,
)
from seqtag.data.vocab import lookup_forms
from seqtag.errors import VectorFormatError

logger = logging.getLogger(__name__)


class _Subwords:
    """fastText's vector for any word, built from its character n-grams (picklable)."""

    def __init__(self, keyed_vectors: Any) -> None:
        self.keyed_vectors = keyed_vectors

    def __call__(self, word: str) -> np.ndarray | None:
        try:
            vector = self.keyed_vectors.get_vector(word)
        except KeyError:  # a model trained without n-gram buckets
            return None
        if not np.any(vector):  # no n-grams at all (e.g. a word shorter than min_n)
            return None
        return np.asarray(vector, dtype=np.float32)


@dataclass
class PretrainedVectors:
    """A table of word vectors as plain numpy data.

    Args:
        path: the file the vectors were read from (for messages).
        words: the words, in file order (usually most frequent first).
        matrix: ``float32 [len(words), dim]``; row ``i`` is the vector of ``words[i]``.
        index: word -> row.
        oov_vector: for fastText ``.bin`` models, builds a vector for any word from its
            character n-grams; ``None`` for formats that only know their listed words.
        format: the format the file was read as.
    """

    path: str
    words: list[str]
    matrix: np.ndarray
    index: dict[str, int]
    oov_vector: Callable[[str], np.ndarray | None] | None = None
    format: str = "unknown"

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def find(self, word: str) -> tuple[int | None, str | None]:
        """Row of ``word`` under the :func:`lookup_forms` fallback, and the method that hit."""
        for form, method in lookup_forms(word):
            row = self.index.get(form)
            if row is not None:
                return row, method
        return None, None

    def lookup(self, word: str) -> np.ndarray | None:
        """The vector for ``word``: exact, lowercase, digits normalised, then fastText subwords.

        Returns a read-only view into :attr:`matrix` for listed words, ``None`` if none is found.
        """
        row, _ = self.find(word)
        if row is not None:
            view = self.matrix[row]
            view.flags.writeable = False
            return view
        if self.oov_vector is not None:
            return self.oov_vector(word)
        return None


def load_vectors(
    path: str | os.PathLike[str],
    format: VectorFormat = "auto",
    *,
    allow_gensim_native: bool = False,
    cache: bool = True,
) -> PretrainedVectors:
    """Read a table of word vectors.

    ``auto`` decides by content: a fastText ``.bin`` starts with the magic number 793712314; a
    first line of two integers ``COUNT DIM`` is a word2vec header (text if what follows is
    UTF-8 text, binary otherwise; fastText ``.vec`` is word2vec text); a first line
    ``word v1 v2 ...`` is GloVe. Text and word2vec files may be compressed (``.gz``, ``.bz2``,
    ``.xz``).

    gensim's native format (``KeyedVectors.save``: ``*.kv``, ``*.model``) is a Python pickle:
    loading one can execute arbitrary code hidden in the file, so it is refused unless
    ``allow_gensim_native=True``; convert such files with ``save_word2vec_format`` instead.

    With ``cache`` (the default), word2vec, GloVe and fastText ``.vec`` files are parsed once
    and later loaded from :mod:`seqtag.data.vectors.cache` (numpy arrays, no pickle), which
    turns seconds or minutes of parsing into milliseconds. fastText ``.bin`` models (their
    subword tables) and gensim's native files are always read directly.

    Raises:
        VectorFormatError: the file is missing, is not a vector file of the expected format,
            or is inconsistent (wrong count of numbers on a line, a truncated file, ...).
    """
    start = time.perf_counter()
    file = Path(path)
    if not file.exists():
        raise VectorFormatError(path, None, "no such file (expected pretrained word vectors)")
    if file.is_dir():
        raise VectorFormatError(path, None, "is a directory, not a file of word vectors")
    if format not in FORMATS:
        raise VectorFormatError(
            path, None, f"unknown vector format {format!r}; expected one of {', '.join(FORMATS)}"
        )

    head = read_head(file)
    if not head:
        raise VectorFormatError(path, None, "the file is empty; expected word vectors")
    sniffed = sniff_format(head)
    if sniffed is None and file.suffix.lower() in NATIVE_SUFFIXES:
        sniffed = "gensim-native"

    to_cache = False
    cached: tuple[list[str], np.ndarray] | None = None
    if sniffed == "gensim-native":
        if not allow_gensim_native:
            raise VectorFormatError(
                path,
                None,
                "this looks like gensim's native format (a Python pickle written by "
                "KeyedVectors.save); unpickling can run arbitrary code, so it is refused. "
                "Convert it with KeyedVectors.load(...).save_word2vec_format(..., binary=True), "
                "or pass allow_gensim_native=True if you trust the file",
            )
        vectors = _load_native(file)
    else:
        chosen = format
        if format == "auto":
            if sniffed is None:
                raise VectorFormatError(
                    path,
                    1 if is_text(head) else None,
                    "not a recognised vector file: expected word2vec binary or text (a first "
                    "line 'COUNT DIM'), GloVe text (lines 'word v1 v2 ...', no header) or a "
                    "fastText .bin model",
                )
            chosen = sniffed
        elif sniffed is not None and FAMILY.get(format, format) != sniffed:
            raise VectorFormatError(
                path,
                None,
                f"format={format!r} was given, but the file looks like {describe_format(sniffed)}",
            )
        elif format == "fasttext-bin" and sniffed != "fasttext-bin":
            raise VectorFormatError(
                path,
                None,
                f"not a fastText .bin model: it should start with the magic number "
                f"{FASTTEXT_MAGIC}; fastText's text vectors (.vec) are format='fasttext-vec'",
            )
        if cache and chosen != "fasttext-bin":
            count, dim = announced_shape(head, chosen)
            cached = read_cached(file, chosen, count=count, dim=dim)
        if cached is not None:
            words, matrix = cached
        elif chosen in ("word2vec-text", "fasttext-vec"):
            words, matrix = read_text_vectors(file, header=True)
        elif chosen == "glove":
            words, matrix = read_text_vectors(file, header=False)
        elif chosen == "word2vec-bin":
            words, matrix = _read_word2vec_binary(file, head)
        else:
            vectors = _load_fasttext_bin(file)
        if chosen != "fasttext-bin":
            if cached is None:
                words, matrix = drop_duplicate_words(file, words, matrix)
            index = dict(zip(words, range(len(words)), strict=True))
            vectors = PretrainedVectors(str(path), words, matrix, index, None, chosen)
            to_cache = cache and cached is None

    vectors.path = str(path)
    if cached is None:  # read_cached checked what it returns
        check_table(file, vectors.words, vectors.matrix)
    if to_cache:  # only a valid table is cached
        write_cached(file, vectors.format, vectors.words, vectors.matrix)
    logger.info(
        "read %d vectors of dimension %d from %s (%s) in %.2f s",
        len(vectors.words),
        vectors.dim,
        path,
        vectors.format,
        time.perf_counter() - start,
    )
    return vectors


# -- what gensim reads ------------------------------------------------------------------------


def _read_word2vec_binary(file: Path, head: bytes) -> tuple[list[str], np.ndarray]:
    from gensim.models import KeyedVectors

    count, dim = check_word2vec_binary_header(file, head)
    check_word2vec_binary_entries(file, count, dim)
    try:
        kv = KeyedVectors.load_word2vec_format(str(file), binary=True)
    except EOFError as err:
        raise VectorFormatError(
            file,
            None,
            f"the file ends before the {count:,} vectors of dimension {dim} its header promises "
            "(truncated, or not word2vec binary?)",
        ) from err
    except UnicodeDecodeError as err:
        raise VectorFormatError(
            file,
            None,
            f"a word is not valid UTF-8 ({err.reason}); is this really word2vec binary?",
        ) from err
    except Exception as err:  # gensim's parser fails in many ways on foreign files
        raise VectorFormatError(
            file, None, f"cannot read word2vec binary: {type(err).__name__}: {err}"
        ) from err
    return list(kv.index_to_key), kv.vectors


def _load_fasttext_bin(file: Path) -> PretrainedVectors:
    from gensim.models.fasttext import load_facebook_vectors

    try:
        kv = load_facebook_vectors(str(file))
    except Exception as err:  # struct.error, NotImplementedError (supervised models), ...
        raise VectorFormatError(
            file,
            None,
            f"cannot read a fastText .bin model ({type(err).__name__}: {err}); expected a "
            "model saved by fastText's `skipgram`/`cbow` or gensim's save_facebook_model",
        ) from err
    return _from_keyed_vectors(file, kv, "fasttext-bin")


def _load_native(file: Path) -> PretrainedVectors:
    from gensim.models import KeyedVectors

    try:
        loaded = KeyedVectors.load(str(file))
    except Exception as err:
        raise VectorFormatError(
            file, None, f"cannot read gensim's native format: {type(err).__name__}: {err}"
        ) from err
    kv = getattr(loaded, "wv", loaded)  # a whole Word2Vec/FastText model holds its vectors
    if not isinstance(kv, KeyedVectors):
        raise VectorFormatError(
            file, None, f"the pickle holds a {type(loaded).__name__}, not gensim KeyedVectors"
        )
    return _from_keyed_vectors(file, kv, "gensim-native")


def _from_keyed_vectors(file: Path, kv: Any, format: str) -> PretrainedVectors:
    from gensim.models.fasttext import FastTextKeyedVectors

    subwords = None
    if isinstance(kv, FastTextKeyedVectors) and getattr(kv, "bucket", 0):
        subwords = _Subwords(kv)
    matrix = np.ascontiguousarray(kv.vectors, dtype=np.float32)
    return PretrainedVectors(
        str(file), list(kv.index_to_key), matrix, dict(kv.key_to_index), subwords, format
    )
