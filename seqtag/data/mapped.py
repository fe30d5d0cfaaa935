"""An encoded training corpus as arrays on disk: written in chunks, checked, read by sentence.

The arrays (``.npy``, opened with ``mmap_mode="r"`` and without pickle, read with ``pread``:
see :class:`FileArray`) hold a whole training split in a few bytes per token, so the processes
of one machine share one copy through the page cache instead of each holding Python objects for
every token:

- ``offsets`` int64 [sentences + 1]: where each sentence's tokens start; ``words`` int32 and
  ``tags`` int16/int32 [tokens]: word and target ids (``UNSEEN_TARGET`` and
  ``UNKNOWN_TARGET`` included);
- with character features, ``char_offsets`` int64 [tokens + 1] and ``chars`` int16/int32: the
  character ids of each token, already cut to ``max_word_length``;
- for partially tagged sentences only, ``allowed_sentences`` int64 [partial],
  ``allowed_offsets`` int64 [partial + 1] and ``allowed`` bool [rows, num_tags]: their rows
  of allowed tags (see :mod:`seqtag.data.partial`).

:class:`MappedCorpus` hands out the same :class:`~seqtag.data.batching.EncodedSentence` values
as encoding the sentences in memory, so batches are bit-identical. It leaves out the gold tag
strings (``gold``): training reads only ``tags``, ``mask`` and ``allowed``, and the strings
would be Python objects per token again; evaluation splits keep the in-memory path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from seqtag.data.batching import UNKNOWN_TARGET, EncodedSentence

#: Bytes of the ``.npy`` header written before the data (its shape is filled in at the end).
_HEADER_BYTES = 128
_FLUSH_ITEMS = 1 << 18
#: Items per piece when checking an array (a few MiB at a time).
_CHECK_ITEMS = 1 << 20


def id_dtype(size: int) -> np.dtype:
    """The narrowest of int16 and int32 that holds ids below ``size`` (and -2)."""
    return np.dtype(np.int16 if size <= np.iinfo(np.int16).max else np.int32)


class NpyWriter:
    """Writes one ``.npy`` array by appending chunks, never holding the whole array.

    The file starts with a fixed-size header that :meth:`close` rewrites with the final shape
    (a ``.npy`` version 1.0 header, as ``np.save`` writes).
    """

    def __init__(self, path: Path, dtype: np.dtype | type, width: int | None = None) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.width = width
        self.rows = 0
        self._pending: list = []
        self._pending_items = 0
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._file.write(b"\0" * _HEADER_BYTES)

    def extend(self, values: Sequence[int] | np.ndarray) -> None:
        """Append values (rows of ``width`` values for a 2-D array)."""
        self._pending.append(values)
        self._pending_items += len(values)
        if self._pending_items >= _FLUSH_ITEMS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.width is None:
            values = chain.from_iterable(self._pending)
            chunk = np.fromiter(values, self.dtype, self._pending_items)
        else:
            chunk = np.concatenate(self._pending).astype(self.dtype, copy=False)
        self._file.write(np.ascontiguousarray(chunk).tobytes())
        self.rows += self._pending_items
        self._pending, self._pending_items = [], 0

    def close(self) -> None:
        """Write what is pending and the header with the final shape."""
        self._flush()
        shape = (self.rows,) if self.width is None else (self.rows, self.width)
        header = repr({"descr": self.dtype.str, "fortran_order": False, "shape": shape})
        text = header.encode("latin1")
        text += b" " * (_HEADER_BYTES - 10 - len(text) - 1) + b"\n"
        self._file.seek(0)
        self._file.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text)
        self._file.close()


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def _pieces(array: np.ndarray) -> Iterator[np.ndarray]:
    """A 1-D array in pieces of ``_CHECK_ITEMS``, read from its file when it is mapped.

    Checking a mapped array through the mapping would make every page of it resident in this
    process (and count in its RSS) at start-up, though training touches only the pages of the
    batches it takes; read with ``np.fromfile``, the pages stay in the page cache only.
    """
    step = _CHECK_ITEMS

    def read(start: int, count: int) -> np.ndarray:
        offset = array.offset + start * array.dtype.itemsize
        return np.fromfile(array.filename, array.dtype, count, offset=offset)

    mapped = isinstance(array, np.memmap) and array.filename is not None and len(array) > 0
    # Only a whole mapped array (as np.load maps it) is read from its file: its first items,
    # read both ways, say so.
    if not mapped or not np.array_equal(read(0, min(16, len(array))), array[:16]):
        for start in range(0, len(array), step):
            yield np.asarray(array[start : start + step])
        return
    for start in range(0, len(array), step):
        yield read(start, min(step, len(array) - start))


def _rising(offsets: np.ndarray, name: str, *, end: int, most: int | None = None) -> None:
    """``offsets`` start at 0, end at ``end`` and rise by at least 1 (at most ``most``)."""
    _check(offsets.dtype == np.int64 and offsets.ndim == 1, f"{name} is not int64 [n + 1]")
    _check(len(offsets) >= 1 and offsets[0] == 0 and offsets[-1] == end, f"{name} do not span")
    previous = None
    for piece in _pieces(offsets):
        steps = np.diff(piece if previous is None else np.concatenate(([previous], piece)))
        _check(bool((steps >= 1).all()), f"{name} do not rise")
        _check(most is None or bool((steps <= most).all()), f"{name} have too long a step")
        previous = piece[-1]


def _ids(array: np.ndarray, name: str, dtype: np.dtype, size: int, low: int = 0) -> None:
    """``array`` has ``dtype`` and ids in ``[low, size)``."""
    _check(array.dtype == dtype and array.ndim == 1, f"{name} is not {dtype} [n]")
    for piece in _pieces(array):
        _check(int(piece.min()) >= low and int(piece.max()) < size, f"{name} has ids out of range")


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    sentences: int,
    tokens: int,
    num_words: int,
    num_tags: int,
    num_chars: int | None,
    max_word_length: int,
) -> None:
    """Refuse arrays that do not describe ``sentences`` sentences of ``tokens`` tokens with ids
    of these vocabularies (a ``ValueError`` says what is wrong). Vectorised, a piece at a time."""
    _rising(arrays["offsets"], "offsets", end=tokens)
    _check(len(arrays["offsets"]) == sentences + 1, "offsets do not count the sentences")
    _ids(arrays["words"], "words", np.dtype(np.int32), num_words)
    _check(len(arrays["words"]) == tokens, "words do not count the tokens")
    _ids(arrays["tags"], "tags", id_dtype(num_tags), num_tags, low=UNKNOWN_TARGET)
    _check(len(arrays["tags"]) == tokens, "tags do not count the tokens")
    if num_chars is not None:
        chars = arrays["chars"]
        _rising(arrays["char_offsets"], "char_offsets", end=len(chars), most=max_word_length)
        _check(len(arrays["char_offsets"]) == tokens + 1, "char_offsets do not count the tokens")
        _ids(chars, "chars", id_dtype(num_chars), num_chars)
    if "allowed" in arrays:
        which, rows = arrays["allowed_sentences"], arrays["allowed_offsets"]
        _ids(which, "allowed_sentences", np.dtype(np.int64), sentences)
        _check(bool((np.diff(which) >= 1).all()), "allowed_sentences do not rise")
        allowed = arrays["allowed"]
        _check(allowed.dtype == bool and allowed.shape[1:] == (num_tags,), "allowed is not bool")
        _rising(rows, "allowed_offsets", end=len(allowed))
        offsets = arrays["offsets"]
        lengths = offsets[which + 1] - offsets[which]
        _check(len(rows) == len(which) + 1, "allowed_offsets do not count the sentences")
        _check(bool((np.diff(rows) == lengths).all()), "allowed rows do not match the sentences")


class FileArray:
    """A 1-D ``.npy`` array on disk, read a slice at a time with ``os.pread``.

    Training reads a batch's sentences from anywhere in the arrays. Through a memory mapping,
    each first touch of a page also maps its cached neighbours (the kernel's fault-around, 64
    KiB), so an epoch's random reads would make the whole arrays resident in every process (a
    5,000-read test on a 200 MB mapping: +191 MiB of RSS, with or without ``MADV_RANDOM``).
    Read with ``pread``, the pages stay in the page cache, one copy per machine shared by the
    processes that read them, and each process holds only the batch it copies out.

    Args:
        array: the array as :func:`load_arrays` maps it (its file, offset, dtype, length).
    """

    def __init__(self, array: np.memmap) -> None:
        self.filename = str(array.filename)
        self.offset = int(array.offset)
        self.dtype = array.dtype
        self.length = len(array)
        self._descriptor: tuple[int, int] | None = None  # (process id, file descriptor)

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_descriptor": None}  # a worker process opens its own

    def read(self, start: int, stop: int) -> np.ndarray:
        """Items ``start`` to ``stop`` (a copy)."""
        if not 0 <= start <= stop <= self.length:
            raise IndexError(f"{start}:{stop} of {self.length} items of {self.filename}")
        if self._descriptor is None or self._descriptor[0] != os.getpid():
            self._descriptor = (os.getpid(), os.open(self.filename, os.O_RDONLY))
        size = self.dtype.itemsize
        wanted = (stop - start) * size
        data = os.pread(self._descriptor[1], wanted, self.offset + start * size)
        if len(data) != wanted:
            raise OSError(f"{self.filename}: shorter than its header says")
        return np.frombuffer(data, self.dtype)

    def __del__(self) -> None:
        if self._descriptor is not None and self._descriptor[0] == os.getpid():
            os.close(self._descriptor[1])


class MappedCorpus(Dataset):
    """Encoded sentences ``start`` to ``stop`` of the cached arrays (see the module doc).

    Indexing with a list of positions returns a whole batch, as
    :class:`~seqtag.data.batching.EncodedDataset` does; positions count from ``start``. The
    sentence offsets (8 bytes a sentence, needed whole for the lengths) are held in memory;
    the per-token arrays are read from the files a sentence at a time (:class:`FileArray`).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], stop: int | None = None) -> None:
        self._offsets = np.array(arrays["offsets"])
        self._stop = len(self._offsets) - 1 if stop is None else stop
        self._words = FileArray(arrays["words"])
        self._tags = FileArray(arrays["tags"])
        with_chars = "chars" in arrays
        self._chars = FileArray(arrays["chars"]) if with_chars else None
        self._char_offsets = FileArray(arrays["char_offsets"]) if with_chars else None
        self._partial = np.array(arrays["allowed_sentences"]) if "allowed" in arrays else None
        self._allowed = (
            (arrays["allowed_offsets"], arrays["allowed"]) if "allowed" in arrays else None
        )

    def __len__(self) -> int:
        return self._stop

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sentence (int64), for the length-bucketing sampler."""
        return np.diff(self._offsets[: self._stop + 1])

    def __getitem__(self, item: int | Sequence[int]) -> EncodedSentence | list[EncodedSentence]:
        if isinstance(item, int | np.integer):
            return self._sentence(int(item))
        return [self._sentence(int(i)) for i in item]

    def _sentence(self, index: int) -> EncodedSentence:
        if not 0 <= index < self._stop:
            raise IndexError(index)
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        words = self._words.read(start, end).astype(np.int64)
        tags = self._tags.read(start, end).astype(np.int64)
        chars = None
        if self._chars is not None:
            bounds = self._char_offsets.read(start, end + 1)
            flat = self._chars.read(int(bounds[0]), int(bounds[-1])).astype(np.int64)
            chars = np.split(flat, (bounds[1:-1] - bounds[0]).tolist())
        allowed = None
        if self._partial is not None:
            slot = int(np.searchsorted(self._partial, index))
            if slot < len(self._partial) and self._partial[slot] == index:
                offsets, rows = self._allowed
                first, last = int(offsets[slot]), int(offsets[slot + 1])
                allowed = np.array(rows[first:last])
        return EncodedSentence(index, words, tags, chars, None, None, allowed)


def load_arrays(folder: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named ``.npy`` arrays of a folder, memory-mapped read-only, never unpickled."""
    return {
        name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in names
    }
