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
from collections.abc import Iterator, Sequence

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
    the corpus readers instead refuse inside a token (see :mod:`seqtag.data.io.formats`). The line
    end is removed; a UTF-8 BOM at the very start is dropped. Lines are decoded as they are
    read, so an encoding error names the line and column it is on.

    A NUL byte is refused too: it is valid UTF-8, but no text holds one, and it is what UTF-16
    text without a byte-order mark looks like read as UTF-8 (``T\\x00h\\x00e\\x00``), which
    would otherwise be tagged as tokens of letters and NULs.

    Raises:
        CorpusFormatError: the path is missing or a directory, the gzip stream is corrupt, or a
            line is not valid UTF-8 or holds a NUL byte.
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
            if "\x00" in text:
                raise nul_error(name, lineno, text)
            yield lineno, text
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise CorpusFormatError(name, None, f"corrupt or truncated gzip file ({err})") from None
    finally:
        if is_stdin:
            stream.detach()
        else:
            stream.close()


def nul_error(path: str | os.PathLike[str], lineno: int, text: str) -> CorpusFormatError:
    """The error for a line holding a NUL byte; names UTF-16 when every other byte is NUL."""
    column = text.index("\x00") + 1
    if text.count("\x00") >= max(1, (len(text) - 1) // 2):
        order = "BE" if column == 1 else "LE"
        found = f"this looks like UTF-16 (convert it: iconv -f UTF-16{order} -t UTF-8)"
    else:
        found = "not binary data"
    return CorpusFormatError(
        path, lineno, f"NUL byte at column {column}: the file must be UTF-8 text, {found}"
    )


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


#: Whitespace besides the space and tab that separate fields (NBSP, U+3000, ...): a token may
#: hold it, but must not be made of it alone.
OTHER_SPACE = re.compile(r"[^\S \t]")


def token_problem(token: str) -> str | None:
    """Why a string cannot be a token, or ``None`` when it can: the one rule of every reader
    and of ``tag()``.

    A token is a non-empty string that is not only whitespace (a tagger would tag an invisible
    token, and the output could not be read back: whitespace separates tokens there), and
    holds no NUL (UTF-16 or binary data) and no line break (see :data:`LINE_BREAK`: the output
    would have more lines than the sentence has tokens).
    """
    if not token:
        return "is empty: every token needs a visible character"
    if token.isspace():
        names = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(token))
        return f"is only whitespace ({names}): every token needs a visible character"
    if "\x00" in token:
        return f"holds a NUL character at position {token.index(chr(0)) + 1}: is it UTF-16 text?"
    found = LINE_BREAK.search(token)
    if found:
        return (
            f"holds a line break ({describe_line_break(found.group())}): replace it with a "
            "space or remove it"
        )
    return None


def show_token(token: str) -> str:
    """A token as error messages quote it: ``repr``, cut after 40 characters."""
    return repr(token) if len(token) <= 40 else repr(token[:40]) + "..."


# Every character :func:`token_problem` can object to (``\\s`` includes every line break).
_SUSPECT = re.compile(r"[\s\x00]")


def first_token_problem(tokens: Sequence[str]) -> tuple[int, str] | None:
    """``(1-based number, message)`` of the first token :func:`token_problem` refuses, naming
    it, or ``None``; a sentence of plain words costs one join and one search."""
    if "" not in tokens and not _SUSPECT.search("".join(tokens)):
        return None
    for number, token in enumerate(tokens, 1):
        problem = token_problem(token)
        if problem is not None:
            return number, f"{show_token(token)}, {problem}"
    return None


def check_tokens(
    path: str | os.PathLike[str], lineno: int, tokens: Sequence[str], what: str = "token"
) -> None:
    """Refuse the first token (or ``what``: column) that :func:`token_problem` refuses."""
    found = first_token_problem(tokens)
    if found is not None:
        raise CorpusFormatError(path, lineno, f"{what} {found[0]}, {found[1]}")
