"""The vector cache: a parsed file is loaded from numpy arrays the next time, identically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

import seqtag.data.embeddings as embeddings
from seqtag.data.embeddings import load_vectors
from seqtag.data.vector_cache import cache_dir
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
