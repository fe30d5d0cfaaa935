"""Vector files as bytes: which format a file is in, and the parsers that need no gensim.

:func:`seqtag.data.vectors.embeddings.load_vectors` decides what to do with a file by its content,
not
its name, and most of that decision, like most files, needs only the standard library and
numpy: sniffing the first bytes, parsing word2vec/fastText/GloVe text (much faster than gensim
does), checking a word2vec binary header against the file size, and checking the parsed table.
Keeping this apart from the gensim loaders lets each be read, and tested, on its own.

Every problem raises a :class:`~seqtag.errors.VectorFormatError` that names the file (and the
line, where one is known) and says what was expected.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import logging
import lzma
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal, get_args

import numpy as np

from seqtag.errors import VectorFormatError

logger = logging.getLogger(__name__)

VectorFormat = Literal[
    "auto", "word2vec-bin", "word2vec-text", "glove", "fasttext-vec", "fasttext-bin"
]

FORMATS: tuple[str, ...] = get_args(VectorFormat)
#: Formats read by the same code: a fastText .vec file is word2vec text.
FAMILY = {"fasttext-vec": "word2vec-text"}
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin model
#: Suffixes of gensim's native (pickle) files, for files whose first bytes say nothing.
NATIVE_SUFFIXES = {".kv", ".model", ".pkl", ".pickle", ".wv"}
COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".lzma"}
#: What reading a damaged or compressed file can raise.
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
_SNIFF_BYTES = 1 << 16
_TEXT_CHUNK_LINES = 50_000
_BINARY_CHUNK_BYTES = 1 << 20
#: A word2vec binary "word" longer than this is taken for damage, not read further.
_MAX_WORD_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"


def open_vector_file(file: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its suffix says ``.gz``, ``.bz2`` or ``.xz``."""
    suffix = file.suffix.lower()
    if suffix == ".gz":
        return gzip.open(file, "rb")
    if suffix == ".bz2":
        return bz2.open(file, "rb")
    if suffix in (".xz", ".lzma"):
        return lzma.open(file, "rb")
    return open(file, "rb")


def read_head(file: Path) -> bytes:
    """The first (decompressed) bytes of a file, enough for :func:`sniff_format`."""
    try:
        with open_vector_file(file) as stream:
            return stream.read(_SNIFF_BYTES)
    except READ_ERRORS as err:
        raise VectorFormatError(file, None, f"cannot read the file: {err}") from err


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark (some Windows editors write one)."""
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def parse_header(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` of a word2vec header line ``COUNT DIM``, or ``None`` if it is not one."""
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    return None


def is_text(data: bytes) -> bool:
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


def sniff_format(head: bytes) -> str | None:
    """The format the first bytes of a file suggest, or ``None`` if they suggest none.

    One of ``fasttext-bin``, ``gensim-native``, ``word2vec-text``, ``word2vec-bin``, ``glove``.
    """
    if len(head) >= 4 and struct.unpack("<i", head[:4])[0] == FASTTEXT_MAGIC:
        return "fasttext-bin"
    if head[:1] == b"\x80":  # pickle protocol 2 or later
        return "gensim-native"
    first, _, rest = strip_bom(head).partition(b"\n")
    if parse_header(first) is not None:
        return "word2vec-text" if is_text(rest) else "word2vec-bin"
    if _is_vector_line(first, None):
        return "glove"
    return None


def announced_shape(head: bytes, format: str) -> tuple[int | None, int | None]:
    """``(count, dim)`` that the first line of a file promises, ``None`` where it says nothing.

    A word2vec header gives both; a GloVe first line gives the dimension.
    """
    first, newline, _ = strip_bom(head).partition(b"\n")
    if FAMILY.get(format, format) in ("word2vec-text", "word2vec-bin"):
        return parse_header(first) or (None, None)
    if format == "glove" and newline:
        return None, len(first.split()) - 1 or None
    return None, None


def describe_format(sniffed: str) -> str:
    """What a sniffed format is, and the ``format=`` that reads it (for error messages)."""
    return {
        "fasttext-bin": "a fastText .bin model; pass format='fasttext-bin' or 'auto'",
        "word2vec-text": "word2vec/fastText text with a 'COUNT DIM' header line; "
        "pass format='word2vec-text' or 'auto'",
        "word2vec-bin": "word2vec binary (a 'COUNT DIM' header followed by binary data); "
        "pass format='word2vec-bin' or 'auto'",
        "glove": "GloVe text (no header line); pass format='glove' or 'auto'",
    }[sniffed]


def read_text_vectors(file: Path, *, header: bool) -> tuple[list[str], np.ndarray]:
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
        with open_vector_file(file) as stream:
            first = strip_bom(stream.readline())
            lines: Iterable[bytes] = stream
            if not header:
                lines = itertools.chain([first], stream)
            else:
                parsed = parse_header(first)
                if parsed is None:
                    raise VectorFormatError(
                        file,
                        1,
                        "expected a header line 'COUNT DIM' (two integers), found "
                        f"{first[:60]!r}; for GloVe files without a header use format='glove'",
                    )
                count, dim = parsed
            rests: list[str] = []
            for raw in lines:
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
        raise VectorFormatError(file, line_no, f"not UTF-8 text ({err.reason})") from err
    except READ_ERRORS as err:
        raise VectorFormatError(file, None, f"cannot read the file: {err}") from err
    if not words:
        raise VectorFormatError(file, None, "the file holds no vectors")
    if count is not None and count != len(words):
        raise VectorFormatError(
            file,
            None,
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
        raise VectorFormatError(file, line_no, problem)
    return block


def _first_bad_line(file: Path, header: bool, dim: int | None) -> tuple[int | None, str]:
    """Slow path for error messages: the first line that is not ``word`` plus ``dim`` numbers."""
    with open_vector_file(file) as stream:
        line_no = 0
        if header:
            stream.readline()
            line_no = 1
        for raw in stream:
            line_no += 1
            if line_no == 1:
                raw = strip_bom(raw)
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


def check_word2vec_binary_header(file: Path, head: bytes) -> tuple[int, int]:
    """``(count, dim)`` of a word2vec binary file, refusing headers its size cannot fill.

    Each entry needs at least a 1-byte word, a space and ``dim`` float32s: a header promising
    more than an uncompressed file holds would make gensim allocate far more memory than the
    file could fill, so it is refused before gensim sees it.
    """
    first = head.partition(b"\n")[0]
    parsed = parse_header(first)
    if parsed is None:
        raise VectorFormatError(
            file,
            1,
            f"expected a word2vec header line 'COUNT DIM' (two integers), found {first[:60]!r}",
        )
    count, dim = parsed
    if count == 0 or dim == 0:
        raise VectorFormatError(
            file, None, f"the header announces {count} vectors of dimension {dim}"
        )
    if file.suffix.lower() not in COMPRESSED_SUFFIXES:
        needed = count * (4 * dim + 2)
        size = file.stat().st_size
        if needed > size:
            raise VectorFormatError(
                file,
                None,
                f"the header promises {count:,} vectors of dimension {dim}, which needs at "
                f"least {needed:,} bytes, but the file has {size:,} (truncated, or not "
                "word2vec binary?)",
            )
    return count, dim


def check_word2vec_binary_entries(file: Path, count: int, dim: int) -> None:
    """Refuse a word2vec binary file that holds more or fewer vectors than its header says.

    gensim reads exactly the promised count and ignores whatever follows, so a header that
    promises too few would silently lose vectors, and trailing bytes (a second file appended,
    a wrong dimension) would pass unnoticed. This walks the entries as gensim does (a word up
    to a space, possibly after a newline, then ``dim`` float32s) and accepts nothing after the
    last one but whitespace.
    """
    entries, rest = _count_word2vec_binary_entries(file, dim)
    if entries == count and not rest:
        return
    extra = f" and then {rest:,} bytes that are not a whole vector" if rest else ""
    raise VectorFormatError(
        file,
        None,
        f"the header promises {count:,} vectors of dimension {dim}, but the file holds "
        f"{entries:,}{extra} (truncated, appended to or edited file, or a wrong header?)",
    )


def _count_word2vec_binary_entries(file: Path, dim: int) -> tuple[int, int]:
    """Whole entries of a word2vec binary file, and the count of non-blank bytes left over."""
    vector_bytes = 4 * dim
    entries = 0
    try:
        with open_vector_file(file) as stream:
            stream.readline()  # the header
            buffer, start, ended = b"", 0, False
            while True:
                space = buffer.find(b" ", start)
                if space != -1 and len(buffer) - space - 1 >= vector_bytes:
                    start = space + 1 + vector_bytes
                    entries += 1
                    continue
                if ended or (space == -1 and len(buffer) - start > _MAX_WORD_BYTES):
                    break
                chunk = stream.read(_BINARY_CHUNK_BYTES)
                ended = not chunk
                buffer, start = buffer[start:] + chunk, 0
            rest = len(buffer[start:].strip())
            if rest:
                rest += sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
    except READ_ERRORS as err:
        raise VectorFormatError(file, None, f"cannot read the file: {err}") from err
    return entries, rest


def drop_duplicate_words(
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


def check_table(file: Path, words: list[str], matrix: np.ndarray) -> None:
    """Refuse a table without vectors, or one whose values are not all finite."""
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise VectorFormatError(file, None, f"the file holds no vectors (shape {matrix.shape})")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise VectorFormatError(
            file, None, f"the vector of {words[bad]!r} (entry {bad + 1}) holds NaN or infinity"
        )
