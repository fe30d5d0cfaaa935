"""What the Python API accepts as sentences, and the mistakes it refuses.

``tag(["The", "cat", "sat"])`` (one sentence, outer list forgotten) and ``tag("The cat sat")``
would otherwise tag every word, or every character, as a sentence of its own, without error;
``tag([["", "cat", " "]])`` would tag invisible tokens. ``tag()`` and ``tag_stream()`` check
their input with the one generator here, :func:`iter_token_lists`, so a stream read a sentence
at a time (``chunk_size=1``) is refused exactly where the same list given to ``tag()`` is; and
a token is judged by the rule every file reader applies
(:func:`~seqtag.data.io.text_files.token_problem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from seqtag.data.io.text_files import first_token_problem

_SHAPES = (
    "pass a list of token lists, e.g. tag([['The', 'cat', 'sat', '.']]), or a list of "
    "sentence strings split on whitespace, e.g. tag(['The cat sat .'])"
)

#: One-word strings a stream may start with before its shape is known (a string with
#: whitespace or a token list settles it); past this many, it is refused as a flat token list.
UNDECIDED_LIMIT = 10_000


def as_token_lists(sentences: Iterable[Iterable[str]] | Iterable[str]) -> list[list[str]]:
    """Sentences as lists of tokens (all of :func:`iter_token_lists`, as a list)."""
    return list(iter_token_lists(sentences))


def iter_token_lists(sentences: Iterable[Iterable[str]] | Iterable[str]) -> Iterator[list[str]]:
    """Sentences as lists of tokens, read lazily; the input check of ``tag()`` and
    ``tag_stream()``.

    Accepts token lists (lists or tuples of strings) and sentence strings, which are split on
    whitespace. A list of strings without any whitespace is refused when it has more than one
    string: it is almost always one sentence's tokens, so wrap it in a list; write one-word
    sentences as ``[["Hello"], ["Thanks"]]``. Read lazily, one-word strings at the start are
    held back until a string with whitespace shows the input is sentence strings (at most
    :data:`UNDECIDED_LIMIT` of them), so a stream gets the same answer as a list. Every token
    must be a non-empty string that is not only whitespace and holds no NUL or line break, the
    rule of the file readers (an empty sentence is allowed, and tagged as one).

    Raises:
        TypeError: for a bare string, a flat token list, a mix of strings and token lists, or
            tokens that are not strings.
        ValueError: for a token that is empty, only whitespace, or holds a NUL or a line break,
            naming the sentence and token (0-based sentence, 1-based token).
    """
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"tag() got one string, not a list of sentences: {_SHAPES}")
    strings: bool | None = None  # None until the input's shape is known
    held: list[str] = []  # one-word strings read while it is not
    for position, item in enumerate(sentences):
        if isinstance(item, str):
            if strings is False:
                raise TypeError(f"tag() got a mix of strings and token lists: {_SHAPES}")
            if strings is None and not any(c.isspace() for c in item):
                held.append(item)
                if len(held) > UNDECIDED_LIMIT:
                    raise _flat_list(f"more than {UNDECIDED_LIMIT:,}")
                continue
            if strings is None:
                strings = True
                yield from _release(held, position - len(held))
                held = []
            yield _checked(position, item.split())
            continue
        if strings or held:
            raise TypeError(f"tag() got a mix of strings and token lists: {_SHAPES}")
        strings = False
        if isinstance(item, bytes) or not isinstance(item, Iterable):
            raise TypeError(f"tag(): sentence {position} is a {type(item).__name__}: {_SHAPES}")
        tokens = list(item)
        bad = next((n for n, t in enumerate(tokens, 1) if not isinstance(t, str)), None)
        if bad is not None:  # the position, as a None token would pass for "none found"
            token = tokens[bad - 1]
            raise TypeError(
                f"tag(): sentence {position}, token {bad} is a {type(token).__name__} "
                f"({token!r}); tokens must be strings"
            )
        yield _checked(position, tokens)
    if len(held) > 1:
        raise _flat_list(str(len(held)))
    yield from _release(held, 0)


def _release(held: list[str], first: int) -> Iterator[list[str]]:
    """One-word sentence strings held back, now known to be sentences, as token lists."""
    for offset, word in enumerate(held):
        yield _checked(first + offset, [word])


def _checked(position: int, tokens: list[str]) -> list[str]:
    """``tokens``, or a ValueError naming the first one no reader would accept."""
    found = first_token_problem(tokens)
    if found is not None:
        number, problem = found
        raise ValueError(f"tag(): sentence {position}, token {number}, {problem}")
    return tokens


def _flat_list(count: str) -> TypeError:
    return TypeError(
        f"tag() got a flat list of {count} words, which looks like one sentence's tokens: {_SHAPES}"
    )
