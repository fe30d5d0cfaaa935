"""Opening UTF-8 text files, gzipped ones and standard input, line by line.

Every corpus reader goes through :func:`open_text`, so every way a text file can be unreadable
(missing, a directory, corrupt gzip, a byte that is not UTF-8) is one
:class:`~seqtag.errors.CorpusFormatError` naming the file and the line.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import zlib
from collections.abc import Iterator

from seqtag.errors import CorpusFormatError

#: The name that reads standard input.
STDIN = "-"


def open_text(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` from a UTF-8 text file, ``.gz`` opened transparently.

    Lines are split on ``\\n`` only and decoded one by one, so an encoding error names the line
    it is on (``str.splitlines`` would also split on form feeds and Unicode separators, which
    can occur inside tokens). The trailing newline and CR are removed; a UTF-8 BOM at the very
    start is dropped.

    Raises:
        CorpusFormatError: the path is missing or a directory, the gzip stream is corrupt, or a
            line is not valid UTF-8.
    """
    name = os.fspath(path)
    if name == STDIN:
        name, raw = "<stdin>", contextlib.nullcontext(sys.stdin.buffer)  # never closed here
    else:
        if os.path.isdir(name):
            raise CorpusFormatError(name, None, "is a directory, expected a file")
        try:
            raw = gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise CorpusFormatError(name, None, "no such file") from None
        except PermissionError:
            raise CorpusFormatError(name, None, "permission denied") from None
    with raw as stream:
        try:
            for lineno, data in enumerate(stream, 1):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _decode_error(name, lineno, data, err) from None
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text.rstrip("\r\n")
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise CorpusFormatError(name, None, f"corrupt or truncated gzip file ({err})") from None


def _decode_error(
    path: str, lineno: int, data: bytes, err: UnicodeDecodeError
) -> CorpusFormatError:
    """Describe an undecodable byte by its value and 1-based character column."""
    prefix = data[: err.start].decode("utf-8", errors="replace")
    if lineno == 1 and prefix.startswith("\ufeff"):
        prefix = prefix[1:]
    byte = data[err.start]
    return CorpusFormatError(
        path,
        lineno,
        f"invalid UTF-8 (byte 0x{byte:02x} at column {len(prefix) + 1}); "
        "the file must be UTF-8 encoded",
    )
