"""Pretrained word vectors: read them with gensim, align them to a vocabulary.

This is the only module of seqtag that imports gensim (lazily, inside the loaders), so the
rest of the package works with plain numpy arrays. Every way a vector file can be wrong ends
in a :class:`~seqtag.errors.VectorFormatError` that names the file (and the line, where one is
known) and says what was expected, never in a bare gensim or numpy traceback.

Lookups fall back the way :class:`seqtag.data.vocab.Vocabulary` does (exact, lowercase, digits
normalised to ``0``), so a word's vector and its vocabulary row come from the same spelling.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, get_args

import numpy as np

from seqtag.data.vector_cache import read_cached, write_cached
from seqtag.data.vocab import normalize_digits
from seqtag.errors import VectorFormatError

logger = logging.getLogger(__name__)

VectorFormat = Literal[
    "auto", "word2vec-bin", "word2vec-text", "glove", "fasttext-vec", "fasttext-bin"
]

_FORMATS: tuple[str, ...] = get_args(VectorFormat)
# Formats read by the same code: a fastText .vec file is word2vec text.
_FAMILY = {"fasttext-vec": "word2vec-text"}
_FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin model
_NATIVE_SUFFIXES = {".kv", ".model", ".pkl", ".pickle", ".wv"}
_SNIFF_BYTES = 1 << 16
_TEXT_CHUNK_LINES = 50_000
METHODS: tuple[str, ...] = ("exact", "lower", "digits", "subword")
_METHOD_LABELS = {"exact": "exact", "lower": "lowercase", "digits": "digits", "subword": "subword"}


def fallback_forms(word: str) -> list[tuple[str, str]]:
    """The spellings :meth:`PretrainedVectors.lookup` tries, in order, each with its method.

    Exact, lowercase, digits normalised (every ASCII digit becomes ``0``), then lowercase with
    digits normalised; forms equal to an earlier one are left out.
    """
    forms = [(word, "exact")]
    lower = word.lower()
    if lower != word:
        forms.append((lower, "lower"))
    for form in (normalize_digits(word), normalize_digits(lower)):
        if all(form != seen for seen, _ in forms):
            forms.append((form, "digits"))
    return forms


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
        """Row of ``word`` under the exact/lowercase/digits fallback, and the method that hit."""
        for form, method in fallback_forms(word):
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


# -- reading ----------------------------------------------------------------------------------


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
    and later loaded from :mod:`seqtag.data.vector_cache` (numpy arrays, no pickle), which
    turns seconds or minutes of parsing into milliseconds. fastText ``.bin`` models (their
    subword tables) and gensim's native files are always read directly.

    Raises:
        VectorFormatError: the file is missing, is not a vector file of the expected format,
            or is inconsistent (wrong count of numbers on a line, a truncated file, ...).
    """
    start = time.perf_counter()
    file = Path(path)
    if not file.exists():
        raise VectorFormatError(path, "no such file (expected pretrained word vectors)")
    if file.is_dir():
        raise VectorFormatError(path, "is a directory, not a file of word vectors")
    if format not in _FORMATS:
        raise VectorFormatError(
            path, f"unknown vector format {format!r}; expected one of {', '.join(_FORMATS)}"
        )

    head = _read_head(file)
    if not head:
        raise VectorFormatError(path, "the file is empty; expected word vectors")
    sniffed = _sniff(head)
    if sniffed is None and file.suffix.lower() in _NATIVE_SUFFIXES:
        sniffed = "gensim-native"

    to_cache = False
    if sniffed == "gensim-native":
        if not allow_gensim_native:
            raise VectorFormatError(
                path,
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
                    "not a recognised vector file: expected word2vec binary or text (a first "
                    "line 'COUNT DIM'), GloVe text (lines 'word v1 v2 ...', no header) or a "
                    "fastText .bin model",
                    line=1 if _is_text(head) else None,
                )
            chosen = sniffed
        elif sniffed is not None and _FAMILY.get(format, format) != sniffed:
            raise VectorFormatError(
                path, f"format={format!r} was given, but the file looks like {_describe(sniffed)}"
            )
        elif format == "fasttext-bin" and sniffed != "fasttext-bin":
            raise VectorFormatError(
                path,
                f"not a fastText .bin model: it should start with the magic number "
                f"{_FASTTEXT_MAGIC}; fastText's text vectors (.vec) are format='fasttext-vec'",
            )
        cached = read_cached(file, chosen) if cache and chosen != "fasttext-bin" else None
        if cached is not None:
            words, matrix = cached
        elif chosen in ("word2vec-text", "fasttext-vec"):
            words, matrix = _read_text(file, header=True)
        elif chosen == "glove":
            words, matrix = _read_text(file, header=False)
        elif chosen == "word2vec-bin":
            words, matrix = _read_word2vec_binary(file, head)
        else:
            vectors = _load_fasttext_bin(file)
        if chosen != "fasttext-bin":
            if cached is None:
                words, matrix = _drop_duplicates(file, words, matrix)
            index = dict(zip(words, range(len(words)), strict=True))
            vectors = PretrainedVectors(str(path), words, matrix, index, None, chosen)
            to_cache = cache and cached is None

    vectors.path = str(path)
    _check_matrix(file, vectors)
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


_COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".lzma"}


def _open(file: Path) -> IO[bytes]:
    suffix = file.suffix.lower()
    if suffix == ".gz":
        return gzip.open(file, "rb")
    if suffix == ".bz2":
        return bz2.open(file, "rb")
    if suffix in (".xz", ".lzma"):
        return lzma.open(file, "rb")
    return open(file, "rb")


_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def _read_head(file: Path) -> bytes:
    try:
        with _open(file) as stream:
            return stream.read(_SNIFF_BYTES)
    except _READ_ERRORS as err:
        raise VectorFormatError(file, f"cannot read the file: {err}") from err


def _parse_header(line: bytes) -> tuple[int, int] | None:
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    return None


def _is_text(data: bytes) -> bool:
    """Whether ``data`` (possibly cut mid-character at the end) is UTF-8 text."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(data) - 3 and err.reason == "unexpected end of data"
    return b"\x00" not in data


def _is_vector_line(line: bytes, dim: int | None) -> bool:
    try:
        parts = line.decode("utf-8").rstrip().split(" ")
    except UnicodeDecodeError:
        return False
    if len(parts) < 2 or (dim is not None and len(parts) != dim + 1):
        return False
    try:
        for value in parts[1:]:
            float(value)
    except ValueError:
        return False
    return True


def _sniff(head: bytes) -> str | None:
    """The format the first bytes of a file suggest, or ``None`` if they suggest none."""
    if len(head) >= 4 and struct.unpack("<i", head[:4])[0] == _FASTTEXT_MAGIC:
        return "fasttext-bin"
    if head[:1] == b"\x80":  # pickle protocol 2 or later
        return "gensim-native"
    first, _, rest = head.partition(b"\n")
    if _parse_header(first) is not None:
        return "word2vec-text" if _is_text(rest) else "word2vec-bin"
    if _is_vector_line(first, None):
        return "glove"
    return None


def _describe(sniffed: str) -> str:
    return {
        "fasttext-bin": "a fastText .bin model; pass format='fasttext-bin' or 'auto'",
        "word2vec-text": "word2vec/fastText text with a 'COUNT DIM' header line; "
        "pass format='word2vec-text' or 'auto'",
        "word2vec-bin": "word2vec binary (a 'COUNT DIM' header followed by binary data); "
        "pass format='word2vec-bin' or 'auto'",
        "glove": "GloVe text (no header line); pass format='glove' or 'auto'",
    }[sniffed]


def _read_text(file: Path, *, header: bool) -> tuple[list[str], np.ndarray]:
    """word2vec/fastText text (``header=True``) or GloVe text, parsed in bulk by numpy.

    gensim's text reader converts every number in Python (about 9 s for 5 M numbers) and
    does not check that lines agree on the dimension; this reads the words in one pass and
    hands the numbers to ``np.loadtxt`` in chunks, and on any failure re-reads the file line
    by line to report the first bad line.
    """
    count = dim = None
    words: list[str] = []
    blocks: list[np.ndarray] = []
    try:
        with _open(file) as stream:
            if header:
                first = stream.readline()
                parsed = _parse_header(first)
                if parsed is None:
                    raise VectorFormatError(
                        file,
                        "expected a header line 'COUNT DIM' (two integers), found "
                        f"{first[:60]!r}; for GloVe files without a header use format='glove'",
                        line=1,
                    )
                count, dim = parsed
            rests: list[str] = []
            for raw in stream:
                line = raw.decode("utf-8").rstrip()
                if not line:
                    continue
                word, _, rest = line.partition(" ")
                words.append(word)
                rests.append(rest)
                if len(rests) == _TEXT_CHUNK_LINES:
                    blocks.append(_parse_numbers(file, rests, dim, header))
                    dim = blocks[-1].shape[1]
                    rests = []
            if rests:
                blocks.append(_parse_numbers(file, rests, dim, header))
    except UnicodeDecodeError as err:
        line_no, _ = _first_bad_line(file, header, dim)
        raise VectorFormatError(file, f"not UTF-8 text ({err.reason})", line=line_no) from err
    except _READ_ERRORS as err:
        raise VectorFormatError(file, f"cannot read the file: {err}") from err
    if not words:
        raise VectorFormatError(file, "the file holds no vectors")
    if count is not None and count != len(words):
        raise VectorFormatError(
            file,
            f"the header promises {count:,} vectors, but the file holds {len(words):,} "
            "(truncated or edited file?)",
        )
    matrix = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return words, matrix


def _parse_numbers(file: Path, rests: list[str], dim: int | None, header: bool) -> np.ndarray:
    try:
        block = np.loadtxt(rests, dtype=np.float32, delimiter=" ", comments=None, ndmin=2)
    except ValueError:
        block = None
    if block is None or block.shape[0] != len(rests) or (dim is not None and block.shape[1] != dim):
        line_no, problem = _first_bad_line(file, header, dim)
        raise VectorFormatError(file, problem, line=line_no)
    return block


def _first_bad_line(file: Path, header: bool, dim: int | None) -> tuple[int | None, str]:
    """Slow path for error messages: the first line that is not ``word`` plus ``dim`` numbers."""
    with _open(file) as stream:
        line_no = 0
        if header:
            stream.readline()
            line_no = 1
        for raw in stream:
            line_no += 1
            try:
                line = raw.decode("utf-8").rstrip()
            except UnicodeDecodeError as err:
                return line_no, f"not UTF-8 text ({err.reason})"
            if not line:
                continue
            word, *values = line.split(" ")
            if dim is None:
                dim = len(values)
                if dim == 0:
                    return line_no, f"expected a word followed by numbers, found {line[:60]!r}"
            if len(values) != dim:
                return line_no, (
                    f"expected {dim} numbers after the word {word!r} (the dimension of "
                    f"{'the header' if header else 'the first line'}), found {len(values)}"
                )
            for value in values:
                try:
                    float(value)
                except ValueError:
                    return line_no, f"expected a number, found {value!r} (word {word!r})"
    return None, "cannot parse the vectors (expected lines 'word v1 v2 ...')"


def _read_word2vec_binary(file: Path, head: bytes) -> tuple[list[str], np.ndarray]:
    from gensim.models import KeyedVectors

    first = head.partition(b"\n")[0]
    parsed = _parse_header(first)
    if parsed is None:
        raise VectorFormatError(
            file,
            f"expected a word2vec header line 'COUNT DIM' (two integers), found {first[:60]!r}",
            line=1,
        )
    count, dim = parsed
    if count == 0 or dim == 0:
        raise VectorFormatError(file, f"the header announces {count} vectors of dimension {dim}")
    if file.suffix.lower() not in _COMPRESSED_SUFFIXES:
        # Each entry needs at least a 1-byte word, a space and dim float32s: refuse headers
        # that would make gensim allocate far more memory than the file could fill.
        needed = count * (4 * dim + 2)
        size = file.stat().st_size
        if needed > size:
            raise VectorFormatError(
                file,
                f"the header promises {count:,} vectors of dimension {dim}, which needs at "
                f"least {needed:,} bytes, but the file has {size:,} (truncated, or not "
                "word2vec binary?)",
            )
    try:
        kv = KeyedVectors.load_word2vec_format(str(file), binary=True)
    except EOFError as err:
        raise VectorFormatError(
            file,
            f"the file ends before the {count:,} vectors of dimension {dim} its header promises "
            "(truncated, or not word2vec binary?)",
        ) from err
    except UnicodeDecodeError as err:
        raise VectorFormatError(
            file, f"a word is not valid UTF-8 ({err.reason}); is this really word2vec binary?"
        ) from err
    except Exception as err:  # gensim's parser fails in many ways on foreign files
        raise VectorFormatError(
            file, f"cannot read word2vec binary: {type(err).__name__}: {err}"
        ) from err
    return list(kv.index_to_key), kv.vectors


def _load_fasttext_bin(file: Path) -> PretrainedVectors:
    from gensim.models.fasttext import load_facebook_vectors

    try:
        kv = load_facebook_vectors(str(file))
    except Exception as err:  # struct.error, NotImplementedError (supervised models), ...
        raise VectorFormatError(
            file,
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
            file, f"cannot read gensim's native format: {type(err).__name__}: {err}"
        ) from err
    kv = getattr(loaded, "wv", loaded)  # a whole Word2Vec/FastText model holds its vectors
    if not isinstance(kv, KeyedVectors):
        raise VectorFormatError(
            file, f"the pickle holds a {type(loaded).__name__}, not gensim KeyedVectors"
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


def _drop_duplicates(
    file: Path, words: list[str], matrix: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Keep the first vector of a repeated word, as gensim does."""
    first = dict(zip(reversed(words), range(len(words) - 1, -1, -1), strict=True))
    if len(first) == len(words):
        return words, matrix
    keep = sorted(first.values())
    logger.warning(
        "%s: %d repeated words; keeping the first vector of each", file, len(words) - len(keep)
    )
    return [words[i] for i in keep], matrix[keep]


def _check_matrix(file: Path, vectors: PretrainedVectors) -> None:
    matrix = vectors.matrix
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise VectorFormatError(file, f"the file holds no vectors (shape {matrix.shape})")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise VectorFormatError(
            file, f"the vector of {vectors.words[bad]!r} (entry {bad + 1}) holds NaN or infinity"
        )


# -- aligning to a vocabulary -------------------------------------------------------------------


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

    The first ``special`` entries are not words: the first (padding) gets a zero row, the
    others (unknown) a random row. Words found by :meth:`PretrainedVectors.lookup` get their
    vector; the rest get random normal rows with the standard deviation of the pretrained
    matrix, so they start on the same scale (seeded with ``seed``: the same every run).

    Raises:
        VectorFormatError: ``expected_dim`` is given and differs from the vectors' dimension.
    """
    dim = vectors.dim
    if expected_dim is not None and expected_dim != dim:
        raise VectorFormatError(
            vectors.path,
            f"vectors have dimension {dim}, but the model expects {expected_dim}; use vectors "
            f"of dimension {expected_dim} or set the word embedding size to {dim}",
        )
    if not 0 <= special <= len(vocabulary_words):
        raise ValueError(f"special={special} must lie between 0 and the vocabulary size")
    rng = np.random.default_rng(seed)
    std = float(vectors.matrix.std())
    matrix = rng.normal(0.0, std, size=(len(vocabulary_words), dim)).astype(np.float32)
    if special:
        matrix[0] = 0.0

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
