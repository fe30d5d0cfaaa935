"""A cache of parsed vector files: parse a file once, then load numpy arrays.

Parsing a word2vec or GloVe file costs seconds to minutes (text formats parse every number;
a large binary table also passes through gensim's own structures), and it happens at every
``seqtag fit``. The cache stores what :func:`seqtag.data.vectors.embeddings.load_vectors` produced,
the words (JSON) and the matrix (``.npy``, read without pickle), keyed by the file's resolved
path, size, modification time and format, so an edited or replaced file is read again.

Every entry is checked when it is read: a flat list of distinct strings (valid Unicode), a
finite ``float32`` matrix with one row per word and the dimension the file's first line
promises, and a fingerprint of the file's whole content (SHA-256, streamed in 1 MiB reads)
that catches a replacement or an edit keeping the size and modification time (``cp -p``,
``rsync -t``, a restored backup, one number changed in place). Hashing reads the whole file
once per load, which costs far less than parsing it (see ``benchmarks/README.md``). An entry
that fails any check, or cannot be read at all (a JSON file nested too deeply to parse, a
truncated array), is discarded and rebuilt from the file. Folders ``.partial-*`` that a killed
writer left behind are removed once they are an hour old.

Where: ``$SEQTAG_CACHE_DIR`` if set (``off`` disables the cache), else
``$XDG_CACHE_HOME/seqtag/vectors``, else ``~/.cache/seqtag/vectors``. A cache that cannot be
written (read-only home, full disk) only costs the speed-up: seqtag logs a warning and reads
the file as before. An unreadable or inconsistent entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from seqtag.data.cache_files import (
    STALE_PARTIAL_SECONDS,
    cache_dir,
    discard,
    fingerprint,
    publish,
    remove_stale_partials,
)

logger = logging.getLogger(__name__)

#: Bump when what is stored changes; older entries are then simply not found.
CACHE_VERSION = 2
__all__ = ["STALE_PARTIAL_SECONDS", "cache_dir", "fingerprint", "read_cached", "write_cached"]
_FINITE_CHECK_ROWS = 1 << 16


def cache_key(path: Path, format: str) -> str:
    """Identity of one version of one file read as one format."""
    stat = path.stat()
    identity = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{format}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def read_cached(
    path: Path, format: str, *, count: int | None = None, dim: int | None = None
) -> tuple[list[str], np.ndarray] | None:
    """The words and matrix cached for this file and format, or ``None`` on a miss.

    Args:
        path: the vector file.
        format: the format it is read as.
        count: the most vectors the file can hold (its header's count), if known.
        dim: the dimension the file promises (its header or first line), if known.

    An entry that cannot be read, or fails a check, is discarded (and ``None`` returned), so
    that the caller parses the file and caches it afresh.
    """
    folder = cache_dir()
    if folder is None:
        return None
    remove_stale_partials(folder, "vector")
    entry = folder / cache_key(path, format)
    if not entry.is_dir():
        return None
    try:
        words = json.loads((entry / "words.json").read_text(encoding="utf-8"))
        matrix = np.load(entry / "matrix.npy", allow_pickle=False)
        source = json.loads((entry / "source.json").read_text(encoding="utf-8"))
        current = fingerprint(path)
    except (OSError, EOFError, ValueError, RecursionError) as err:
        # RecursionError: a JSON file nested too deeply for Python's parser.
        logger.warning("ignoring an unreadable vector cache entry %s: %s", entry, err)
        discard(entry)
        return None
    problem = _problem(words, matrix, source, current, count, dim)
    if problem is not None:
        logger.info("rebuilding the vector cache entry %s of %s: %s", entry, path, problem)
        discard(entry)
        return None
    logger.info("read %s from the vector cache %s", path, entry)
    return words, matrix


def _problem(
    words: object,
    matrix: np.ndarray,
    source: object,
    current: str,
    count: int | None,
    dim: int | None,
) -> str | None:
    """Why a cache entry cannot be used, or ``None`` if it can."""
    if not isinstance(source, dict) or source.get("fingerprint") != current:
        return "the file's content differs from what was cached"
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        return "words.json is not a flat list of strings"
    if matrix.dtype != np.float32 or matrix.ndim != 2 or 0 in matrix.shape:
        return f"matrix.npy holds {matrix.dtype} {matrix.shape}, expected float32 [words, dim]"
    if matrix.shape[0] != len(words):
        return f"matrix.npy has {matrix.shape[0]:,} rows for {len(words):,} words"
    if dim is not None and matrix.shape[1] != dim:
        return f"the cached vectors have dimension {matrix.shape[1]}, the file promises {dim}"
    if count is not None and len(words) > count:
        return f"{len(words):,} cached words, but the file's header promises {count:,}"
    if len(set(words)) != len(words):
        return "words.json repeats words"
    try:
        "".join(words).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escape, such as "\ud800"
        return "words.json holds a string that is not valid Unicode"
    for start in range(0, matrix.shape[0], _FINITE_CHECK_ROWS):
        if not np.isfinite(matrix[start : start + _FINITE_CHECK_ROWS]).all():
            return "matrix.npy holds NaN or infinity"
    return None


def write_cached(path: Path, format: str, words: list[str], matrix: np.ndarray) -> Path | None:
    """Store a parsed file; returns the entry, or ``None`` if the cache is off or unwritable.

    The entry is written into a temporary folder and renamed into place, so a crash or a
    concurrent writer (several DDP processes) never leaves a half-written entry behind.
    """
    folder = cache_dir()
    if folder is None:
        return None

    def write(temporary: Path) -> None:
        source = {
            "path": str(path.resolve()),
            "format": format,
            "version": CACHE_VERSION,
            "fingerprint": fingerprint(path),
        }
        (temporary / "words.json").write_text(json.dumps(words), encoding="utf-8")
        np.save(temporary / "matrix.npy", np.ascontiguousarray(matrix, dtype=np.float32))
        (temporary / "source.json").write_text(json.dumps(source), encoding="utf-8")

    return publish(folder, cache_key(path, format), write, "vector")
