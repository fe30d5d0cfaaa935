"""Opening UTF-8 text files, gzipped ones and standard input, line by line.

Every corpus reader goes through :func:`open_text`, so every way a text file can be unreadable
(missing, a directory, corrupt gzip, a byte that is not UTF-8) is one
:class:`~seqtag.errors.CorpusFormatError` naming the file and the line.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
import zlib
from collections.abc import Iterator

from seqtag.errors import CorpusFormatError

#: The name that reads standard input.
STDIN = "-"


def open_text(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` from a UTF-8 text file, ``.gz`` opened transparently.

    A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac files), as with Python's
    universal newlines, and line numbers count every such line. One exception: ``\\r\\r\\n``
    is one line end, not a line end and a blank line, because it is what a CRLF file becomes
    when written through a text mode that adds a CR (``write(line + "\\r\\n")`` on
    Windows), and a blank line after every line would silently cut every sentence of a CoNLL
    file into one-token sentences. No other character ends a line: ``str.splitlines`` would
    also split on ``\\v``, ``\\f``, ``\\x1c``-``\\x1e``, U+0085, U+2028 and U+2029, which
    the corpus readers instead refuse inside a token (see :mod:`seqtag.data.formats`). The line
    end is removed; a UTF-8 BOM at the very start is dropped. Lines are decoded as they are
    read, so an encoding error names the line and column it is on.

    Raises:
        CorpusFormatError: the path is missing or a directory, the gzip stream is corrupt, or a
            line is not valid UTF-8.
    """
    name = os.fspath(path)
    is_stdin = name == STDIN
    if is_stdin:
        name, raw = "<stdin>", sys.stdin.buffer  # never closed here
    else:
        if os.path.isdir(name):
            raise CorpusFormatError(name, None, "is a directory, expected a file")
        try:
            raw = gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise CorpusFormatError(name, None, "no such file") from None
        except PermissionError:
            raise CorpusFormatError(name, None, "permission denied") from None
    # Bytes that are not UTF-8 become lone surrogates, which valid UTF-8 never decodes to, so a
    # line that holds one is re-encoded to its original bytes to describe the error.
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
    lineno, after_cr = 0, False
    try:
        for text in stream:  # each line keeps its "\n", "\r\n" or "\r"
            if after_cr and text == "\r\n":  # the end of "\r\r\n"
                after_cr = False
                continue
            lineno += 1
            after_cr = False
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            elif text.endswith("\r"):
                text, after_cr = text[:-1], True
            if not text.isascii() and _UNDECODED.search(text):
                data = text.encode("utf-8", errors="surrogateescape")
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _decode_error(name, lineno, data, err) from None
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield lineno, text
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise CorpusFormatError(name, None, f"corrupt or truncated gzip file ({err})") from None
    finally:
        if is_stdin:
            stream.detach()
        else:
            stream.close()


# Lone surrogates: what ``errors="surrogateescape"`` turns undecodable bytes into.
_UNDECODED = re.compile("[\ud800-\udfff]")


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


# Every character that str.splitlines ends a line at; no token or tag may hold one.
_LINE_BREAK_NAMES = {
    "\n": "LINE FEED",
    "\r": "CARRIAGE RETURN",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x85": "NEXT LINE",
    "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}
LINE_BREAK = re.compile("[" + "".join(_LINE_BREAK_NAMES) + "]")
"""Matches any character that some software reads as a line break (``str.splitlines``)."""


def describe_line_break(char: str) -> str:
    """``U+2028 LINE SEPARATOR``: a line-break character by code point and name."""
    return f"U+{ord(char):04X} {_LINE_BREAK_NAMES[char]}"


def line_break_error(
    path: str | os.PathLike[str], lineno: int, text: str, offset: int, what: str
) -> CorpusFormatError:
    """The error for the first line break in ``text``, which starts at ``offset`` in its line."""
    found = LINE_BREAK.search(text)
    assert found is not None
    return CorpusFormatError(
        path,
        lineno,
        f"{describe_line_break(found.group())} inside {what} at column "
        f"{offset + found.start() + 1} (tokens and tags cannot hold line breaks: replace it "
        "with a space or remove it)",
    )
