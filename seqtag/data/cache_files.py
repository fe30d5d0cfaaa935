"""What seqtag's on-disk caches share: where they live, file fingerprints, atomic entries.

Two caches use it: parsed vector files (:mod:`seqtag.data.vectors.cache`) and encoded training
corpora (:mod:`seqtag.data.corpus_cache`). Each entry is a folder named by a key, written
into a temporary ``.partial-*`` folder and renamed into place, so a crash or a concurrent
writer (several DDP processes, two runs) never leaves a half-written entry behind; a bad entry
is renamed aside before it is removed, so no reader sees it half deleted. Folders
``.partial-*`` that a killed writer left behind are removed once they are an hour old.

Where: ``$SEQTAG_CACHE_DIR`` if set (``off`` disables every cache; the vector cache uses the
folder itself, the others a subfolder named after them), else ``$XDG_CACHE_HOME/seqtag/<kind>``,
else ``~/.cache/seqtag/<kind>``. A cache that cannot be written (read-only home, full disk)
only costs the speed-up: seqtag logs a warning and carries on without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_DISABLED = {"", "0", "off", "false", "no", "none"}
_READ_BYTES = 1 << 20
#: A ``.partial-*`` folder untouched this long was left by a writer that died.
STALE_PARTIAL_SECONDS = 3600


def cache_dir(kind: str = "vectors") -> Path | None:
    """The folder of one cache, or ``None`` when ``SEQTAG_CACHE_DIR`` turns caching off."""
    configured = os.environ.get("SEQTAG_CACHE_DIR")
    if configured is not None:
        if configured.strip().lower() in _DISABLED:
            return None
        return Path(configured) if kind == "vectors" else Path(configured) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seqtag" / kind


def fingerprint(path: Path) -> str:
    """A SHA-256 hash of the file's whole content, read 1 MiB at a time.

    The whole file, not a sample: an entry must never outlive a change anywhere in the file,
    and one edited number in the middle keeps the size, and with ``touch -r`` the time.
    SHA-256 rather than BLAKE2b: OpenSSL's uses the CPU's SHA instructions, and measured 1.7x
    faster here (``benchmarks/README.md``).
    """
    digest = hashlib.sha256()
    buffer = bytearray(_READ_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while read := stream.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def discard(entry: Path) -> None:
    """Remove an entry: first renamed aside (atomic), so no reader sees it half deleted."""
    aside = entry.with_name(f".partial-discarded-{uuid.uuid4().hex}")
    try:
        os.replace(entry, aside)
    except OSError:  # already discarded by another process, or a read-only cache
        return
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_partials(folder: Path, what: str) -> None:
    """Remove ``.partial-*`` folders untouched for an hour (their writer was killed).

    Recent ones are kept: another process may be writing its entry right now.
    """
    now = time.time()
    for partial in folder.glob(".partial-*"):
        try:
            touched = max(
                [partial.stat().st_mtime, *(part.stat().st_mtime for part in partial.iterdir())]
            )
        except OSError:  # removed meanwhile, or not a folder
            continue
        if now - touched > STALE_PARTIAL_SECONDS:
            logger.info("removing %s, left by a %s cache writer that stopped", partial, what)
            shutil.rmtree(partial, ignore_errors=True)


def publish(folder: Path, key: str, write: Callable[[Path], None], what: str) -> Path | None:
    """Write an entry with ``write(temporary folder)`` and rename it into ``folder / key``.

    Returns the entry, or ``None`` (after a warning) if the cache cannot be written. When a
    concurrent writer put the entry there first, its entry stays and is returned.
    """
    entry = folder / key
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
        write(temporary)
        try:
            os.replace(temporary, entry)
            temporary = None
        except OSError:
            if not entry.is_dir():  # else a concurrent writer already put the entry there
                raise
    except OSError as err:
        logger.warning(
            "cannot write the %s cache in %s (%s); continuing without it", what, folder, err
        )
        return None
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return entry
