"""A prepared corpus's format: its names, its files (local or remote), and the checks of what
is read back: the manifest, LitData's index and the chunk files.

A prepared folder is user input like any corpus file: it may be edited, truncated, written by
another seqtag, or planted. Its JSON is parsed as JSON only, every value the manifest holds is
checked for type and range before anything is built from it, LitData's ``index.json`` may name
only the plain serializers seqtag writes (never ``pickle``, whose loading runs code), and the
chunk files must be the ones the manifest lists, of their sizes and SHA-256. Each problem is one
:class:`~seqtag.errors.CorpusFormatError` naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from seqtag.data.cache_files import fingerprint
from seqtag.data.counts import CorpusCounts
from seqtag.data.vocab import Vocabularies, check_vocabulary_data
from seqtag.errors import ConfigError, CorpusFormatError
from seqtag.files.outputs import write_text_atomically

#: The manifest's file name inside a prepared corpus.
MANIFEST = "seqtag-prepared.json"
#: What this seqtag writes and reads; another version is refused (prepare the corpus again).
FORMAT_VERSION = 1
#: The data options that shape the encoded sentences or the vocabularies: training from the
#: corpus with other values would silently train on something else, so they must agree.
SHAPING_OPTIONS = (
    "format",
    "tag_field",
    "token_column",
    "tag_column",
    "tag_scheme",
    "train_scheme",
    "min_freq",
    "lowercase",
    "unknown_shapes",
    "max_word_length",
    "missing_tag",
    "vectors_top_k",
)
#: How to install what prepared corpora need.
INSTALL_HINT = "pip install 'seqtag[stream]'"
#: LitData's chunk names (no path separators: a manifest cannot name a file elsewhere).
CHUNK_NAME = re.compile(r"chunk-[0-9]{1,9}-[0-9]{1,9}\.bin")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def litdata() -> Any:
    """The ``litdata`` module, or a one-line error saying how to install it."""
    try:
        import litdata as module
    except ImportError:
        raise ConfigError(
            f"prepared corpora need LitData, which is not installed: {INSTALL_HINT}"
        ) from None
    return module


# -- files, local or remote ------------------------------------------------------------------
def is_url(location: str) -> bool:
    """Whether a location is a URL of an object store (``s3://``, ``gs://``...), not a path."""
    return "://" in location and not location.startswith("file://")


def join(location: str, name: str) -> str:
    """``name`` inside the folder or URL ``location``."""
    return f"{location.rstrip('/')}/{name}" if is_url(location) else os.path.join(location, name)


def url_filesystem(url: str) -> tuple[Any, str]:
    """fsspec's file system for a URL, or a one-line error naming what to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise ConfigError(f"{url}: cannot open this URL: {err}") from None


def exists(location: str) -> bool:
    if is_url(location):
        fs, path = url_filesystem(location)
        return bool(fs.exists(path))
    return os.path.exists(location)


def read_text(location: str) -> str:
    if is_url(location):
        fs, path = url_filesystem(location)
        with fs.open(path, "rb") as stream:
            return stream.read().decode("utf-8")
    return Path(location).read_text(encoding="utf-8")


def write_text(location: str, text: str) -> None:
    """Write a small text file: locally whole or not at all, remotely in one upload."""
    if is_url(location):
        fs, path = url_filesystem(location)
        with fs.open(path, "wb") as stream:
            stream.write(text.encode("utf-8"))
        return
    write_text_atomically(Path(location), text)


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


# -- checks -----------------------------------------------------------------------------------
#: The serializers of seqtag's items (ints and numpy arrays): nothing else is read.
_SERIALIZER = re.compile(r"int|numpy|no_header_numpy:[0-9]{1,2}")
#: What every stored sentence holds (see :func:`seqtag.data.prepared.sentence_item`).
ITEM_KEYS = ("index", "words", "tags", "chars", "char_offsets", "allowed")


def _fail(location: str, message: str) -> CorpusFormatError:
    return CorpusFormatError(location, None, message)


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_manifest(location: str, manifest: Any) -> tuple[Vocabularies, np.ndarray, CorpusCounts]:
    """The manifest's vocabularies, word counts (per word id) and corpus counts, once every
    entry has been checked."""
    if not isinstance(manifest, dict) or manifest.get("format") != "seqtag-prepared":
        raise _fail(location, f"{MANIFEST} is not the manifest of a seqtag prepared corpus")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _fail(
            location,
            f"{MANIFEST} has format version {version!r}, and this seqtag reads version "
            f"{FORMAT_VERSION}: prepare the corpus again with this seqtag",
        )
    try:
        vocabularies = _vocabularies(manifest.get("vocabularies"))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _fail(location, f"{MANIFEST}: its vocabularies are damaged ({err})") from None
    counts = manifest.get("word_counts")
    if not (
        isinstance(counts, list)
        and len(counts) == len(vocabularies.words)
        and all(_is_int(count) for count in counts)
    ):
        raise _fail(location, f"{MANIFEST}: word_counts must be one count >= 0 per word")
    options = manifest.get("options")
    if not isinstance(options, dict) or set(options) != {*SHAPING_OPTIONS, "vectors"}:
        raise _fail(location, f"{MANIFEST}: its options are not those seqtag prepare records")
    if not all(value is None or isinstance(value, bool | int | str) for value in options.values()):
        raise _fail(location, f"{MANIFEST}: its options must be plain values")
    source = manifest.get("source")
    if not (
        isinstance(source, dict)
        and isinstance(source.get("path"), str)
        and is_sha256(source.get("sha256"))
        and _is_int(source.get("bytes"))
    ):
        raise _fail(location, f"{MANIFEST}: its source must give the file's path, size, SHA-256")
    if not (_is_int(manifest.get("sentences"), 1) and _is_int(manifest.get("tokens"), 1)):
        raise _fail(location, f"{MANIFEST}: sentences and tokens must be counts >= 1")
    chunks = manifest.get("chunks")
    if not (
        is_sha256(manifest.get("index_sha256"))
        and isinstance(chunks, list)
        and chunks
        and all(_is_chunk(chunk) for chunk in chunks)
    ):
        raise _fail(location, f"{MANIFEST}: its chunk list is damaged")
    try:
        corpus_counts = CorpusCounts.from_dict(manifest.get("counts"))
    except ValueError as err:
        raise _fail(location, f"{MANIFEST}: its corpus counts are damaged ({err})") from None
    if (corpus_counts.sentences, corpus_counts.tokens) != (
        manifest["sentences"],
        manifest["tokens"],
    ):
        raise _fail(location, f"{MANIFEST}: its counts and totals disagree")
    return vocabularies, np.asarray(counts, dtype=np.float32), corpus_counts


def _is_chunk(chunk: Any) -> bool:
    return (
        isinstance(chunk, dict)
        and isinstance(chunk.get("filename"), str)
        and CHUNK_NAME.fullmatch(chunk["filename"]) is not None
        and _is_int(chunk.get("bytes"))
        and (chunk.get("sha256") is None or is_sha256(chunk["sha256"]))
    )


def _vocabularies(data: Any) -> Vocabularies:
    """Vocabularies from plain data whose every entry has the type ``to_dict()`` writes."""
    check_vocabulary_data(data)
    return Vocabularies.from_dict(data)


def check_chunks(location: str, manifest: dict[str, Any]) -> None:
    """LitData's index is the one the manifest recorded, names only seqtag's serializers and
    the manifest's chunks, and (in a local folder) every chunk is there, whole and unchanged.

    In an object store the chunks are fetched by LitData as training reads them; their items
    are still checked one by one (:mod:`seqtag.data.prepared_loader`).
    """
    index_path = join(location, "index.json")
    try:
        text = read_text(index_path)
        index = json.loads(text)
    except FileNotFoundError:
        raise _fail(location, "index.json, LitData's list of chunks, is missing") from None
    except (ValueError, UnicodeDecodeError):
        raise _fail(location, "index.json is not JSON") from None
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != manifest["index_sha256"]:
        raise _fail(location, f"index.json is not the one {MANIFEST} records (it was changed)")
    _check_index(location, index, manifest)
    if is_url(location):
        return
    for chunk in manifest["chunks"]:
        path = os.path.join(location, chunk["filename"])
        if not os.path.isfile(path):
            raise _fail(location, f"the chunk {chunk['filename']} is missing")
        if os.path.getsize(path) != chunk["bytes"] or (
            chunk["sha256"] is not None and fingerprint(Path(path)) != chunk["sha256"]
        ):
            raise _fail(location, f"the chunk {chunk['filename']} was changed or is damaged")


def _check_index(location: str, index: Any, manifest: dict[str, Any]) -> None:
    config = index.get("config") if isinstance(index, dict) else None
    chunks = index.get("chunks") if isinstance(index, dict) else None
    formats = config.get("data_format") if isinstance(config, dict) else None
    if not (
        isinstance(formats, list)
        and all(isinstance(f, str) and _SERIALIZER.fullmatch(f) for f in formats)
        and config.get("item_loader") == "PyTreeLoader"
        and config.get("compression") is None
        and config.get("encryption") is None
        and _plain_tree(config.get("data_spec"))
    ):
        raise _fail(location, "index.json describes items seqtag prepare does not write")
    listed = [
        {"filename": chunk.get("filename"), "bytes": chunk.get("chunk_bytes")}
        for chunk in chunks or []
        if isinstance(chunk, dict)
    ]
    recorded = [{"filename": c["filename"], "bytes": c["bytes"]} for c in manifest["chunks"]]
    sizes = [chunk.get("chunk_size") for chunk in chunks or [] if isinstance(chunk, dict)]
    if listed != recorded or sum(s for s in sizes if _is_int(s)) != manifest["sentences"]:
        raise _fail(location, f"index.json does not list the chunks {MANIFEST} records")


def _plain_tree(spec: Any) -> bool:
    """LitData's item layout names only a dictionary of seqtag's keys, with plain leaves."""
    try:
        tree = json.loads(spec)
    except (TypeError, ValueError):
        return False
    if not (isinstance(tree, list) and len(tree) == 2 and isinstance(tree[1], dict)):
        return False
    root = tree[1]
    children = root.get("children_spec")
    return (
        root.get("type") == "builtins.dict"
        and root.get("context") == json.dumps(ITEM_KEYS)
        and isinstance(children, list)
        and len(children) == len(ITEM_KEYS)
        and all(child == {"type": None, "context": None, "children_spec": []} for child in children)
    )
