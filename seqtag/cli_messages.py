"""jsonargparse's reports as one line that says which key is wrong and how.

The ``seqtag`` command promises one line per user error; jsonargparse reports a bad value of a
nested option as an indented tree of every alternative it tried. :func:`summarize_parser_error`
keeps the key path and the reasons and drops the rest.
"""

from __future__ import annotations

import re
from typing import Any

from lightning.pytorch.cli import LightningCLI

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


def parser_error_line(message: str, argv: Any) -> str:
    """The one-line form of a parser error, with where to find the valid options."""
    subcommand = next((a for a in argv if a in LightningCLI.subcommands()), None)
    command = f"seqtag {subcommand}" if subcommand else "seqtag"
    return f"{summarize_parser_error(message)} (see {command} --help)"
