"""How one tagged sentence is written: CoNLL lines or one JSON Lines record.

Kept apart from the prediction writer so that what it writes can be checked (and reused, by
:mod:`seqtag.prediction.uncertain`) without a Trainer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from seqtag.data.io.text_files import LINE_BREAK, describe_line_break
from seqtag.errors import ConfigError

__all__ = ["format_conll", "format_jsonl", "span_records"]


def format_conll(
    tokens: Sequence[str], tags: Sequence[str], confidences: Sequence[float] | None = None
) -> str:
    """One ``token<TAB>tag[<TAB>confidence]`` line per token and a blank line after.

    Raises:
        ConfigError: a token or tag holds a tab or a line break (``\\n``, U+2028 and the
            others of ``str.splitlines``), which would add a column or a line. The corpus
            readers refuse line breaks, so only a JSON Lines token with a tab gets here, and
            ``--prediction.format jsonl`` writes it.
    """
    if _UNWRITABLE.search("".join(tokens)) or _UNWRITABLE.search("".join(tags)):
        _refuse_unwritable(tokens, tags)
    if confidences is None:
        lines = [f"{token}\t{tag}\n" for token, tag in zip(tokens, tags, strict=True)]
    else:
        lines = [
            f"{token}\t{tag}\t{conf:.4f}\n"
            for token, tag, conf in zip(tokens, tags, confidences, strict=True)
        ]
    return "".join(lines) + "\n"


# A tab or any character that str.splitlines splits at: none fits in a CoNLL field.
_UNWRITABLE = re.compile("\t|" + LINE_BREAK.pattern)
# Line breaks that json.dumps(ensure_ascii=False) leaves raw: valid JSON, but they split lines
# for str.splitlines and for JavaScript before ES2019.
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _refuse_unwritable(tokens: Sequence[str], tags: Sequence[str]) -> None:
    for what, texts in (("token", tokens), ("tag", tags)):
        for text in texts:
            found = _UNWRITABLE.search(text)
            if found:
                char = found.group()
                name = "a tab" if char == "\t" else describe_line_break(char)
                raise ConfigError(
                    f"cannot write the {what} {text!r} as CoNLL: it holds {name}; "
                    "use --prediction.format jsonl"
                )


def format_jsonl(
    tokens: Sequence[str],
    tags: Sequence[str],
    confidences: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    spans: Sequence[dict[str, Any]] | None = None,
) -> str:
    """One JSON object per sentence: the input record's other fields, tokens, tags, and the
    confidences and spans when given (see :func:`span_records`).

    Always exactly one line: ``json.dumps`` escapes ``\\n``, ``\\r`` and the other control
    characters, and U+0085, U+2028 and U+2029 (which it would leave raw) are escaped here too.
    """
    record = {**(extra or {}), "tokens": list(tokens), "tags": list(tags)}
    if confidences is not None:
        record["confidences"] = [round(float(c), 4) for c in confidences]
    if spans is not None:
        record["spans"] = span_records(spans)
    line = json.dumps(record, ensure_ascii=False)
    if not line.isascii():
        line = line.translate(_JSON_LINE_BREAKS)
    return line + "\n"


def span_records(spans: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans as written: ``start``, ``end`` (exclusive, 0-based token offsets), ``type`` and
    ``confidence`` rounded to 4 significant digits (a softmax tagger's confidence of a long
    span can be far below 0.0001, which 4 decimals would write as 0)."""
    return [
        {
            "start": int(span["start"]),
            "end": int(span["end"]),
            "type": span["type"],
            "confidence": float(f"{float(span['confidence']):.4g}"),
        }
        for span in spans
    ]
