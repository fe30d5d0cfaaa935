"""What ``POST /predict`` accepts, checked before a request reaches the model.

A request is a JSON object::

    {"sentences": [["The", "cat", "sat", "."], ["It", "rained", "."]], "min_confidence": 0.5}

``sentences`` holds token lists, or text lines that are split on whitespace (``["The cat sat
.", "It rained ."]``), as ``tag()`` takes them and by its rules: a list of one-word strings is
refused as one sentence's tokens with the outer list forgotten, a mix of strings and token
lists is refused, and every token must pass the rule of every corpus reader
(:func:`~seqtag.data.io.text_files.token_problem`: not empty, not only whitespace, no NUL, no
line break), so the server refuses exactly the tokens a file would be refused for.
``min_confidence`` (span models only) drops less likely spans, as ``seqtag predict
--prediction.min_confidence`` does; absent or ``null``, the server's own setting applies.

Each problem is a :class:`RequestError`: an HTTP status (400 for a malformed request, 413 for
one over the server's limits, naming the limit) and one line that names the field
(``sentences[2][0]: '', is empty: ...``). Nothing here imports the web framework, so the same
checks run in the HTTP process and, unchanged, in the inference worker.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from seqtag.data.io.text_files import LINE_BREAK, describe_line_break, first_token_problem
from seqtag.errors import SeqtagError

__all__ = ["BYTES_PER_TOKEN", "Limits", "RequestError", "TagRequest", "parse_body", "parse_request"]

#: The request body may hold this many bytes per token of ``max_tokens`` (plus one 64 KiB
#: allowance for the JSON around them): generous for real text, yet a body is never read
#: without bound.
BYTES_PER_TOKEN = 256
BODY_ALLOWANCE = 64 * 1024
#: The fields a request may have.
FIELDS = ("sentences", "min_confidence")
_EXAMPLE = '{"sentences": [["The", "cat", "sat", "."]]}'


@dataclass(frozen=True)
class Limits:
    """How much one request may ask for.

    Attributes:
        max_sentences: sentences per request.
        max_tokens: tokens per request (all its sentences together).
    """

    max_sentences: int = 1000
    max_tokens: int = 25_000

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read (see :data:`BYTES_PER_TOKEN`)."""
        return BYTES_PER_TOKEN * self.max_tokens + BODY_ALLOWANCE


@dataclass(frozen=True)
class TagRequest:
    """A checked request: token lists, and the span threshold to apply (``None``: none)."""

    sentences: list[list[str]]
    min_confidence: float | None = None


class RequestError(SeqtagError):
    """A request the server refuses: ``status`` (4xx) and a one-line message naming the field.

    Args:
        status: the HTTP status to answer with.
        field: the request's field at fault (``sentences[0][2]``, ``request body``).
        message: what is wrong and what is expected.
    """

    def __init__(self, status: int, field: str, message: str) -> None:
        self.status = status
        self.field = field
        super().__init__(f"{field}: {message}")


def parse_body(
    body: bytes, limits: Limits, *, spans: bool, min_confidence: float | None = None
) -> TagRequest:
    """A request body (JSON bytes) as a checked :class:`TagRequest` (see :func:`parse_request`)."""
    if len(body) > limits.max_body_bytes:
        raise too_large(limits)
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "request body", "is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise RequestError(
            400, "request body", f"is not JSON ({err.msg} at character {err.pos}); send {_EXAMPLE}"
        ) from None
    except RecursionError:
        raise RequestError(400, "request body", "is nested too deeply to be a request") from None
    return parse_request(payload, limits, spans=spans, min_confidence=min_confidence)


def too_large(limits: Limits) -> RequestError:
    """The answer to a body over :attr:`Limits.max_body_bytes`."""
    return RequestError(
        413,
        "request body",
        f"over {limits.max_body_bytes:,} bytes, the limit for {limits.max_tokens:,} tokens per "
        "request (seqtag serve --max_tokens): split the request",
    )


def parse_request(
    payload: Any, limits: Limits, *, spans: bool, min_confidence: float | None = None
) -> TagRequest:
    """Check a decoded JSON request; a :class:`TagRequest`, or the first problem found.

    Args:
        payload: the decoded JSON body.
        limits: the server's limits (413 beyond them).
        spans: whether the model tags spans (only then may a request set ``min_confidence``).
        min_confidence: the server's threshold, for a request that does not set its own.
    """
    if not isinstance(payload, dict):
        raise RequestError(
            400, "request body", f"must be a JSON object such as {_EXAMPLE}, got {_kind(payload)}"
        )
    unknown = [key for key in payload if key not in FIELDS]
    if unknown:
        raise RequestError(
            400, str(unknown[0]), f"is not a field of a request; the fields are {', '.join(FIELDS)}"
        )
    if "sentences" not in payload:
        raise RequestError(400, "sentences", f"missing; send {_EXAMPLE}")
    threshold = _min_confidence(payload.get("min_confidence"), spans)
    return TagRequest(
        _sentences(payload["sentences"], limits),
        min_confidence if threshold is None else threshold,
    )


def _min_confidence(value: Any, spans: bool) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise RequestError(400, "min_confidence", f"must be a number from 0 to 1, got {value!r}")
    if not spans:
        raise RequestError(
            400,
            "min_confidence",
            "drops low-confidence spans, but this model tags no spans (it was trained without "
            "data.tag_scheme, e.g. for POS tags): leave it out",
        )
    return float(value)


def _sentences(value: Any, limits: Limits) -> list[list[str]]:
    if not isinstance(value, list):
        raise RequestError(
            400,
            "sentences",
            f"must be a list of sentences (token lists or text lines), got {_kind(value)}",
        )
    if len(value) > limits.max_sentences:
        raise RequestError(
            413,
            "sentences",
            f"{len(value):,} sentences, over the limit of {limits.max_sentences:,} per request "
            "(seqtag serve --max_sentences): split the request",
        )
    lines = bool(value) and all(isinstance(item, str) for item in value)
    if lines and len(value) > 1 and not any(_has_space(item) for item in value):
        raise RequestError(
            400,
            "sentences",
            f"a list of {len(value)} single words looks like one sentence's tokens: send "
            '[["The", "cat"]] for one sentence, or ["The cat", "Hello"] for text lines',
        )
    sentences, tokens = [], 0
    for position, item in enumerate(value):
        field = f"sentences[{position}]"
        if lines:
            sentence = _line(field, item)
        elif isinstance(item, list):
            sentence = _token_list(field, item)
        elif isinstance(item, str):
            raise RequestError(
                400,
                field,
                "is a string among token lists: send every sentence as a token list, or every "
                "one as a text line",
            )
        else:
            raise RequestError(
                400, field, f"must be a list of tokens or a text line, got {_kind(item)}"
            )
        tokens += len(sentence)
        if tokens > limits.max_tokens:
            raise RequestError(
                413,
                "sentences",
                f"more than {limits.max_tokens:,} tokens, the limit per request (seqtag serve "
                "--max_tokens): split the request",
            )
        sentences.append(sentence)
    return sentences


def _has_space(text: str) -> bool:
    return any(char.isspace() for char in text)


def _line(field: str, text: str) -> list[str]:
    """A text line's tokens, split on whitespace as ``tag()`` splits it."""
    found = LINE_BREAK.search(text)
    if found:
        raise RequestError(
            400,
            field,
            f"holds a line break ({describe_line_break(found.group())}) at character "
            f"{found.start() + 1}: a text line is one sentence; send each line as its own string",
        )
    tokens = text.split()
    _check_tokens(field, tokens)
    return tokens


def _token_list(field: str, tokens: list[Any]) -> list[str]:
    for number, token in enumerate(tokens):
        if not isinstance(token, str):
            raise RequestError(400, f"{field}[{number}]", f"must be a string, got {_kind(token)}")
    _check_tokens(field, tokens)
    return tokens


def _check_tokens(field: str, tokens: list[str]) -> None:
    """The file readers' token rule (``number`` is 1-based, the field's index 0-based)."""
    found = first_token_problem(tokens)
    if found is not None:
        number, problem = found
        raise RequestError(400, f"{field}[{number - 1}]", problem)


def _kind(value: Any) -> str:
    """A JSON value's type as JSON names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
