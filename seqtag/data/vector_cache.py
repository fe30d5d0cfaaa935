"""A cache of parsed vector files: parse a file once, then load numpy arrays.

Parsing a word2vec or GloVe file costs seconds to minutes (text formats parse every number;
a large binary table also passes through gensim's own structures), and it happens at every
``seqtag fit``. The cache stores what :func:`seqtag.data.embeddings.load_vectors` produced,
the words (JSON) and the matrix (``.npy``, read without pickle), keyed by the file's resolved
path, size, modification time and format, so an edited or replaced file is read again.

Where: ``$SEQTAG_CACHE_DIR`` if set (``off`` disables the cache), else
``$XDG_CACHE_HOME/seqtag/vectors``, else ``~/.cache/seqtag/vectors``. A cache that cannot be
written (read-only home, full disk) only costs the speed-up: seqtag logs a warning and reads
the file as before. An unreadable or inconsistent entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Bump when what is stored changes; older entries are then simply not found.
CACHE_VERSION = 1
_DISABLED = {"", "0", "off", "false", "no", "none"}


def cache_dir() -> Path | None:
    """The cache folder, or ``None`` when ``SEQTAG_CACHE_DIR`` turns caching off."""
    configured = os.environ.get("SEQTAG_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in _DISABLED else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqtag" / "vectors"


def cache_key(path: Path, format: str) -> str:
    """Identity of one version of one file read as one format."""
    stat = path.stat()
    identity = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{format}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def read_cached(path: Path, format: str) -> tuple[list[str], np.ndarray] | None:
    """The words and matrix cached for this file and format, or ``None`` on a miss."""
    folder = cache_dir()
    if folder is None:
        return None
    entry = folder / cache_key(path, format)
    if not entry.is_dir():
        return None
    try:
        words = json.loads((entry / "words.json").read_text(encoding="utf-8"))
        matrix = np.load(entry / "matrix.npy", allow_pickle=False)
    except (OSError, ValueError) as err:
        logger.warning("ignoring an unreadable vector cache entry %s: %s", entry, err)
        return None
    if (
        not isinstance(words, list)
        or matrix.ndim != 2
        or matrix.dtype != np.float32
        or matrix.shape[0] != len(words)
    ):
        logger.warning("ignoring an inconsistent vector cache entry %s", entry)
        return None
    logger.info("read %s from the vector cache %s", path, entry)
    return words, matrix


def write_cached(path: Path, format: str, words: list[str], matrix: np.ndarray) -> Path | None:
    """Store a parsed file; returns the entry, or ``None`` if the cache is off or unwritable.

    The entry is written into a temporary folder and renamed into place, so a crash or a
    concurrent writer (several DDP processes) never leaves a half-written entry behind.
    """
    folder = cache_dir()
    if folder is None:
        return None
    entry = folder / cache_key(path, format)
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
        (temporary / "words.json").write_text(json.dumps(words), encoding="utf-8")
        np.save(temporary / "matrix.npy", np.ascontiguousarray(matrix, dtype=np.float32))
        source = {"path": str(path.resolve()), "format": format, "version": CACHE_VERSION}
        (temporary / "source.json").write_text(json.dumps(source), encoding="utf-8")
        try:
            os.replace(temporary, entry)
            temporary = None
        except OSError:
            if not entry.is_dir():  # else a concurrent writer already put the entry there
                raise
    except OSError as err:
        logger.warning(
            "cannot write the vector cache in %s (%s); continuing without it", folder, err
        )
        return None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return entry
