"""What the Python API accepts as sentences, and the mistakes it refuses.

``tag(["The", "cat", "sat"])`` (one sentence, outer list forgotten) and ``tag("The cat sat")``
would otherwise tag every word, or every character, as a sentence of its own, without error.
"""

from __future__ import annotations

from collections.abc import Iterable

_SHAPES = (
    "pass a list of token lists, e.g. tag([['The', 'cat', 'sat', '.']]), or a list of "
    "sentence strings split on whitespace, e.g. tag(['The cat sat .'])"
)


def as_token_lists(sentences: Iterable[Iterable[str]] | Iterable[str]) -> list[list[str]]:
    """Sentences as lists of tokens.

    Accepts token lists (lists or tuples of strings) and sentence strings, which are split on
    whitespace. A list of strings without any whitespace is refused when it has more than one
    string: it is almost always one sentence's tokens, so wrap it in a list; write one-word
    sentences as ``[["Hello"], ["Thanks"]]``.

    Raises:
        TypeError: for a bare string, a flat token list, or tokens that are not strings.
    """
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"tag() got one string, not a list of sentences: {_SHAPES}")
    items = list(sentences)
    strings = [item for item in items if isinstance(item, str)]
    if strings and len(strings) != len(items):
        raise TypeError(f"tag() got a mix of strings and token lists: {_SHAPES}")
    if strings:
        if len(strings) > 1 and not any(any(c.isspace() for c in s) for s in strings):
            raise TypeError(
                f"tag() got a flat list of {len(strings)} words, which looks like one "
                f"sentence's tokens: {_SHAPES}"
            )
        return [s.split() for s in strings]
    token_lists = []
    for position, item in enumerate(items):
        if isinstance(item, bytes) or not isinstance(item, Iterable):
            raise TypeError(f"tag(): sentence {position} is a {type(item).__name__}: {_SHAPES}")
        tokens = list(item)
        bad = next((t for t in tokens if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(
                f"tag(): sentence {position} holds a {type(bad).__name__} ({bad!r}); tokens "
                "must be strings"
            )
        token_lists.append(tokens)
    return token_lists
