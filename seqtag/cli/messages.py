"""Errors as the one line the ``seqtag`` command promises.

jsonargparse reports a bad value of a nested option as an indented tree of every alternative it
tried: :func:`summarize_parser_error` keeps the key path and the reasons and drops the rest.
That is text rewriting, kept because no structured form exists: the ``ArgumentError`` carries
only the message (its ``argument_name`` is ``None``), and its chain of causes follows only the
last alternative of a union (``None`` for an optional number), not the one whose reason helps.
Where seqtag can, the words are its own: range types (:mod:`seqtag.options`) say what they
accept, and a missing ``--ckpt_path`` or dev file, calibrate's format and the run options
(:mod:`seqtag.cli.run_options`) are checked by seqtag before anything is built.
:func:`one_line_errors` is how the ``seqtag`` command prints user errors and the system's
refusals (a full disk) as one line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

from seqtag.errors import CommandLineError, SeqtagError

#: Whether this run shows the traceback of user errors: ``SEQTAG_DEBUG=1``, or ``--debug``
#: once the command line has parsed (set by ``SeqtagCLI.parse_arguments``).
debug_requested: ContextVar[bool] = ContextVar("seqtag_debug_requested", default=False)

# Lines of jsonargparse's nested reports that say nothing about what to fix.
_NOISE = re.compile(
    r"Does not validate against any of the Union subtypes|Subtypes: |Errors:$|Given value( type)?: "
    r"|Expected a <class 'NoneType'>$|Expected a path but .* either not accessible or invalid$"
)
# jsonargparse's prefix to the error of a registered type; seqtag.options' range types say
# what they accept themselves ("must be an integer >= 1, got 0").
_TYPE_PREFIX = re.compile(r"Not of type \w+: (?=must be )")
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)')
_CLASS_PATH = re.compile(r"Problem with given class_path '[^']*':\s*(.*)")
_NOT_ACCEPTED = re.compile(
    r"(?:Option '(?P<option>[^']+)' is not accepted"
    r"|(?:Group '(?P<group>[^']+)'|Subcommand '[^']+') does not accept option '(?P<key>[^']+)')$"
)


def summarize_parser_error(message: str) -> str:
    """jsonargparse's indented, multi-line report as one line ``full.key: what is wrong``.

    A nested report such as ``Parser key "model": ... Problem with given class_path ...:
    Option 'hidden_sise' is not accepted`` becomes ``model.init_args.hidden_sise: no such
    option``, and so does an unknown key in a config file (``Subcommand 'fit' does not accept
    option 'data.no_such_key'``); lines that only list the union's alternatives or echo the
    value are dropped, and so is the type's name before a range's own message
    (``data.batch_size: must be an integer >= 1, got 0``).
    """
    stack: list[tuple[int, str]] = []  # (indentation, key component) of the enclosing lines
    problems: dict[str, list[str]] = {}
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):
            text, indent = text[2:].lstrip(), indent + 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if _NOISE.match(text):
            continue
        text = _TYPE_PREFIX.sub("", text)
        if match := _PARSER_KEY.match(text):
            stack.append((indent, match.group(1)))
            text = match.group(2)
        elif match := _CLASS_PATH.match(text):
            stack.append((indent, "init_args"))
            text = match.group(1)
        parts = [part for _, part in stack]
        if match := _NOT_ACCEPTED.match(text):
            parts += [name for name in match.group("option", "group", "key") if name]
            text = "no such option"
        key = ".".join(parts)
        if text:
            problems.setdefault(key, []).append(text)
    parts = [(f"{key}: " if key else "") + "; ".join(texts) for key, texts in problems.items()]
    return "; ".join(parts) or " ".join(message.split())


def parser_error_line(message: str, argv: Any, subcommands: Iterable[str]) -> str:
    """The one-line form of a parser error, with where to find the valid options.

    The subcommand is the first of ``subcommands`` on the command line ``argv``: the parse that
    would have said which one failed.
    """
    names = set(subcommands)
    subcommand = next((a for a in argv if isinstance(a, str) and a in names), None)
    command = f"seqtag {subcommand}" if subcommand else "seqtag"
    return f"{summarize_parser_error(message)} (see {command} --help)"


def silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit cannot fail again.

    As the Python documentation recommends for SIGPIPE (``signal`` module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


def undecodable_config(argv: list[str]) -> CommandLineError | None:
    """The error for the first YAML or JSON file named on the command line that is not UTF-8."""
    from seqtag.data.io.text_files import open_text
    from seqtag.errors import CorpusFormatError

    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if not value.endswith((".yaml", ".yml", ".json")) or not os.path.isfile(value):
            continue
        try:
            for _ in open_text(value):
                pass
        except CorpusFormatError as err:
            return CommandLineError(str(err))
    return None


def print_error(err: BaseException) -> NoReturn:
    """``seqtag: error: WHAT`` on one line; exit status 2 for command lines, else 1.

    An ``OSError`` (a full disk, a file the system refuses) is the machine's answer to a
    request, not a bug: it is shown as ``FILE: reason``.
    """
    if isinstance(err, OSError) and not isinstance(err, SeqtagError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err)
    message = " ".join(line.strip() for line in text.splitlines() if line.strip())
    print(f"seqtag: error: {message}", file=sys.stderr)
    raise SystemExit(2 if isinstance(err, CommandLineError) else 1) from None


@contextmanager
def one_line_errors() -> Iterator[None]:
    """User errors and the system's refusals as one line (tracebacks if
    :data:`debug_requested`).

    A closed standard output (``| head``) is left to :func:`seqtag.cli.main.main`.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except (SeqtagError, OSError) as err:
        if debug_requested.get():
            raise
        print_error(err)
