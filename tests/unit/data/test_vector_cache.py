"""The vector cache: a parsed file is loaded from numpy arrays the next time, identically."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

import seqtag.data.vectors.embeddings as embeddings
from seqtag.data.vectors.cache import STALE_PARTIAL_SECONDS, cache_dir
from seqtag.data.vectors.embeddings import load_vectors
from seqtag.errors import VectorFormatError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(folder))
    return folder


def _write(path: Path, seed: int = 0, words=("the", "cat", "sat", "0000")) -> KeyedVectors:
    kv = KeyedVectors(3)
    kv.add_vectors(list(words), np.random.default_rng(seed).normal(size=(len(words), 3)))
    kv.save_word2vec_format(str(path), binary=path.suffix == ".bin")
    return kv


def _forbid_parsing(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the file was parsed again instead of loaded from the cache")

    monkeypatch.setattr(embeddings, "_read_word2vec_binary", refuse)
    monkeypatch.setattr(embeddings, "read_text_vectors", refuse)


@pytest.mark.parametrize("suffix", [".bin", ".txt"])
def test_second_load_comes_from_the_cache_and_is_identical(tmp_path, cache, monkeypatch, suffix):
    path = tmp_path / f"vectors{suffix}"
    _write(path)
    first = load_vectors(path)
    assert len(list(cache.iterdir())) == 1
    _forbid_parsing(monkeypatch)
    second = load_vectors(path)
    assert second.words == first.words and second.format == first.format
    np.testing.assert_array_equal(second.matrix, first.matrix)
    assert second.lookup("Sat") is not None and second.lookup("1984") is not None


def test_a_changed_file_is_read_again(tmp_path, cache):
    path = tmp_path / "vectors.txt"
    _write(path, seed=0)
    before = load_vectors(path)
    kv = _write(path, seed=1, words=("the", "dog"))
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse clocks
    after = load_vectors(path)
    assert after.words == ["the", "dog"]
    np.testing.assert_allclose(after.matrix, kv.vectors, rtol=1e-6)
    assert not np.array_equal(after.matrix[0], before.matrix[0])


def test_cache_off_by_argument_or_environment(tmp_path, cache, monkeypatch):
    path = tmp_path / "vectors.bin"
    _write(path)
    load_vectors(path, cache=False)
    assert not cache.exists()
    monkeypatch.setenv("SEQTAG_CACHE_DIR", "off")
    assert cache_dir() is None
    load_vectors(path)
    assert not cache.exists()


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(blocker / "vectors"))
    path = tmp_path / "vectors.bin"
    kv = _write(path)
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        vectors = load_vectors(path)
    np.testing.assert_array_equal(vectors.matrix, kv.vectors)
    assert "cannot write the vector cache" in caplog.text


def test_damaged_entry_is_ignored_and_rewritten(tmp_path, cache, caplog):
    path = tmp_path / "vectors.bin"
    kv = _write(path)
    load_vectors(path)
    (entry,) = cache.iterdir()
    (entry / "matrix.npy").write_bytes(b"not numpy")
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        vectors = load_vectors(path)
    assert "unreadable vector cache entry" in caplog.text
    np.testing.assert_array_equal(vectors.matrix, kv.vectors)


def test_invalid_files_are_never_cached(tmp_path, cache):
    path = tmp_path / "vectors.txt"
    path.write_text("2 3\nthe 1 2 3\ncat 1 nan 3\n", encoding="utf-8")
    with pytest.raises(VectorFormatError, match="NaN"):
        load_vectors(path)
    assert not cache.exists() or not any(cache.iterdir())


def _entry(cache: Path) -> Path:
    (entry,) = (child for child in cache.iterdir() if not child.name.startswith("."))
    return entry


def _put_words(entry: Path, words) -> None:
    (entry / "words.json").write_text(json.dumps(words), encoding="utf-8")


def _put_matrix(entry: Path, matrix: np.ndarray) -> None:
    np.save(entry / "matrix.npy", matrix)


BAD_ENTRIES = {
    "nested words": lambda entry, kv: _put_words(entry, [[w] for w in kv.index_to_key]),
    "integer words": lambda entry, kv: _put_words(entry, list(range(len(kv)))),
    "repeated words": lambda entry, kv: _put_words(entry, ["the"] * len(kv)),
    "fewer words": lambda entry, kv: _put_words(entry, kv.index_to_key[:-1]),
    "narrower matrix": lambda entry, kv: _put_matrix(entry, kv.vectors[:, :2]),
    "float64 matrix": lambda entry, kv: _put_matrix(entry, kv.vectors.astype(np.float64)),
    "NaN in the matrix": lambda entry, kv: _put_matrix(entry, kv.vectors * np.nan),
    "no fingerprint": lambda entry, kv: (entry / "source.json").write_text("{}"),
    "lone surrogate": lambda entry, kv: _put_words(entry, ["\ud800", *kv.index_to_key[1:]]),
}


@pytest.mark.parametrize("suffix", [".bin", ".txt", ".glove"])
@pytest.mark.parametrize("damage", list(BAD_ENTRIES))
def test_an_invalid_entry_is_rebuilt(tmp_path, cache, monkeypatch, caplog, suffix, damage):
    path = tmp_path / f"vectors{suffix}"
    kv = _write(path)
    if suffix == ".glove":  # the same table without the header line
        path.write_bytes(path.read_bytes().partition(b"\n")[2])
    load_vectors(path)
    BAD_ENTRIES[damage](_entry(cache), kv)
    with caplog.at_level(logging.INFO, logger="seqtag"):
        vectors = load_vectors(path)
    assert vectors.words == kv.index_to_key
    np.testing.assert_allclose(vectors.matrix, kv.vectors, rtol=1e-6)
    assert "rebuilding the vector cache entry" in caplog.text
    _forbid_parsing(monkeypatch)  # and the entry was rewritten
    np.testing.assert_array_equal(load_vectors(path).matrix, vectors.matrix)


def test_a_pickled_matrix_is_never_unpickled(tmp_path, cache, monkeypatch):
    path = tmp_path / "vectors.bin"
    kv = _write(path)
    load_vectors(path)
    ran = tmp_path / "ran"
    np.save(_entry(cache) / "matrix.npy", np.array([_Trap(ran)], dtype=object))
    np.testing.assert_array_equal(load_vectors(path).matrix, kv.vectors)
    assert not ran.exists()


class _Trap:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_same_size_replacement_with_the_same_mtime_is_read_again(tmp_path, cache):
    path = tmp_path / "vectors.bin"
    _write(path, seed=0)
    load_vectors(path)
    stat = path.stat()
    kv = _write(path, seed=1)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size  # so the cache key is unchanged
    np.testing.assert_array_equal(load_vectors(path).matrix, kv.vectors)


def test_stale_partial_folders_are_removed_and_recent_ones_kept(tmp_path, cache):
    cache.mkdir()
    stale, recent = cache / ".partial-killed", cache / ".partial-writing"
    for folder in (stale, recent):
        folder.mkdir()
        (folder / "words.json").write_text("[]")
    old = time.time() - 2 * STALE_PARTIAL_SECONDS
    for item in (stale / "words.json", stale):
        os.utime(item, (old, old))
    path = tmp_path / "vectors.bin"
    _write(path)
    load_vectors(path)
    assert not stale.exists()
    assert recent.is_dir()


@pytest.mark.parametrize("part", ["words.json", "source.json"])
def test_an_entry_nested_too_deeply_is_discarded_and_rebuilt(
    tmp_path, cache, monkeypatch, caplog, part
):
    path = tmp_path / "vectors.txt"
    kv = _write(path)
    load_vectors(path)
    (_entry(cache) / part).write_text("[" * 100_000, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="seqtag"):
        vectors = load_vectors(path)
    assert vectors.words == kv.index_to_key
    assert "ignoring an unreadable vector cache entry" in caplog.text
    _forbid_parsing(monkeypatch)  # and the entry was rewritten
    np.testing.assert_array_equal(load_vectors(path).matrix, vectors.matrix)


def test_an_edit_in_the_middle_keeping_size_and_mtime_is_read_again(tmp_path, cache):
    """One number changed mid-file (far from the first and last 64 KiB), size and time kept."""
    words = [f"w{i:05d}" for i in range(20_000)]
    path = tmp_path / "vectors.txt"
    kv = _write(path, words=words)
    assert path.stat().st_size > 4 * 65_536
    before = load_vectors(path)
    stat = path.stat()
    lines = path.read_bytes().split(b"\n")
    middle = len(lines) // 2
    word, first, *rest = lines[middle].split(b" ")
    changed = (b"9" if first[-1:] != b"9" else b"8") if first[-1:].isdigit() else None
    assert changed is not None, lines[middle]
    lines[middle] = b" ".join([word, first[:-1] + changed, *rest])
    path.write_bytes(b"\n".join(lines))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    after = load_vectors(path)
    row = words.index(word.decode())
    assert after.matrix[row, 0] != before.matrix[row, 0]
    assert after.matrix[row, 0] == np.float32(float(first[:-1] + changed))
    np.testing.assert_array_equal(np.delete(after.matrix, row, 0), np.delete(kv.vectors, row, 0))
