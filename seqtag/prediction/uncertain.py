"""Choosing what to annotate next: the sentences the model is least sure about.

``seqtag predict --prediction.most_uncertain N --prediction.uncertain_output F`` ranks every
sentence by its uncertainty, ``1 -`` the probability of the predicted tag sequence
(:meth:`seqtag.models.tagger.Tagger.best_path_probability`), and writes the ``N`` highest (ties
go to the earlier sentence) to ``F`` in input order, in the input's format, with the predicted
tags as a pre-annotation.

Memory is O(N) whatever the input's size: each process keeps a bounded heap of its ``N`` most
uncertain sentences. When the main output is a file, the heap is saved (atomically) to
``F.rank{R}-of-{W}.uncertain.json`` right after each chunk is recorded, and the chunk's
progress record holds the digest of that state, so a resumed run starts from a heap it can
vouch for: a state file that matches neither the last chunk's digest nor the one before it
(a kill between the record and the save: that chunk is tagged again) is refused, and so is
any sentence in it that could not have been written (see :func:`check_sentence`). With
several processes rank 0 merges the saved heaps at the end. ``F`` (and its sidecar, see
:func:`uncertain_sidecar_path`) are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqtag.errors import ConfigError, OutputError
from seqtag.files.outputs import check_output_file, write_text_atomically
from seqtag.prediction.formats import format_jsonl, span_records
from seqtag.prediction.progress import digest, read_json

#: Layout version of the saved heaps.
STATE_VERSION = 1
#: Formats that cannot hold a comment line: the uncertainties go to ``F.json`` instead.
SIDECAR_FORMATS = ("columns", "text")


def uncertain_sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the uncertainties of ``--prediction.uncertain_output path`` go for formats
    without comment lines (:data:`SIDECAR_FORMATS`): ``path`` + ``.json``.

    Public so that whoever checks the files a command writes (against its inputs, against
    each other) can check this one too.
    """
    target = Path(path)
    return target.with_name(target.name + ".json")


class MostUncertain:
    """The ``count`` most uncertain sentences seen so far, as a min-heap on (uncertainty,
    -index): the root is the first to give way, and among equals the later sentence."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._indices: set[int] = set()

    def add(self, record: dict[str, Any]) -> None:
        """Offer one sentence: a dict with ``index``, ``uncertainty``, ``tokens``, ``tags``,
        ``extra`` and ``spans``; a sentence already held (by index) is ignored."""
        index = int(record["index"])
        if index in self._indices:
            return
        item = (float(record["uncertainty"]), -index, record)
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, item)
        elif item[:2] > self._heap[0][:2]:
            dropped = heapq.heapreplace(self._heap, item)
            self._indices.discard(-dropped[1])
        else:
            return
        self._indices.add(index)

    def records(self) -> list[dict[str, Any]]:
        """The sentences held, in input order."""
        return sorted((item[2] for item in self._heap), key=lambda r: r["index"])


class UncertainOutput:
    """One process's share of ``--prediction.uncertain_output``.

    Args:
        path: ``F``, the file to write.
        count: how many sentences it gets.
        input_format: the predict input's format (``None``: unknown, then JSON Lines for
            records with fields of their own, else columns).
        tag_field: the CoNLL-U column the tags go to.
        rank: this process's rank.
        world_size: the number of processes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        count: int,
        input_format: str | None,
        tag_field: str,
        rank: int,
        world_size: int,
    ) -> None:
        self.path = Path(path)
        check_output_file(self.path)
        self.input_format = input_format
        if self.may_write_sidecar:
            check_output_file(self.sidecar)
        self.tag_field = tag_field
        self.rank, self.world_size = rank, world_size
        self.heap = MostUncertain(count)

    @property
    def sidecar(self) -> Path:
        """``F.json``, the uncertainties of formats without comment lines."""
        return uncertain_sidecar_path(self.path)

    @property
    def may_write_sidecar(self) -> bool:
        """Whether :meth:`write` may write :attr:`sidecar` (an unknown input format may turn
        out to be columns)."""
        return self.input_format is None or self.input_format in SIDECAR_FORMATS

    def state(self, rank: int) -> Path:
        return self.path.with_name(
            f"{self.path.name}.rank{rank}-of-{self.world_size}.uncertain.json"
        )

    def restore(self, digests: Sequence[str | None], chunk_size: int, progress: Path) -> int:
        """Continue an interrupted run whose output holds one chunk per entry of ``digests``
        (the digest of the state saved with each chunk, from its progress record).

        Returns:
            How many of those chunks to keep: all of them, or all but the last when the run
            was killed between recording that chunk and saving its state (the chunk is then
            tagged again).

        Raises:
            ConfigError: the state is missing.
            OutputError: the state is not the one recorded (edited, or another run's), or
                does not hold sentences this run could have written.
        """
        done = len(digests)
        if done == 0:
            return 0  # every chunk is tagged again: start from an empty heap
        state = self.state(self.rank)
        if state.is_symlink() or (state.exists() and not state.is_file()):
            raise OutputError(f"{state}: is not a regular file; {_START_OVER}")
        try:
            data: bytes | None = state.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as err:
            raise OutputError(f"{state}: cannot read it ({err.strerror or err})") from None
        found = None if data is None else digest(data)
        if found is not None and found == digests[-1]:
            keep = done
        elif found == (digests[-2] if done > 1 else None):
            keep = done - 1
        elif data is None:
            raise ConfigError(
                f"cannot resume with --prediction.most_uncertain: {state} is missing (the "
                f"interrupted run did not keep its most uncertain sentences); {_START_OVER}"
            )
        else:
            raise OutputError(
                f"{state}: is not the state {progress} recorded for this output (it was edited, "
                f"or is another run's); {_START_OVER}"
            )
        if keep:

            def written(index: int) -> bool:
                chunk = index // chunk_size
                return chunk % self.world_size == self.rank and chunk // self.world_size < keep

            for record in self._read(state, data, keep, written):
                self.heap.add(record)
        return keep

    def remove_stale_states(self) -> None:
        """Remove saved states of an interrupted run with another number of processes (its
        parts are removed too: this run starts over)."""
        prefix, suffix = f"{self.path.name}.rank", ".uncertain.json"
        own = f"-of-{self.world_size}{suffix}"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return
        for name in names:
            middle = name[len(prefix) : -len(suffix)]
            if (
                name.startswith(prefix)
                and name.endswith(suffix)
                and not name.endswith(own)
                and middle.replace("-of-", "", 1).isdigit()
            ):
                self.path.with_name(name).unlink(missing_ok=True)

    def state_text(self, chunks: int) -> str:
        """The heap as saved for resume (or for rank 0 to merge), as of ``chunks`` chunks."""
        record = {
            "version": STATE_VERSION,
            "count": self.heap.count,
            "chunks": chunks,
            "sentences": self.heap.records(),
        }
        return json.dumps(record, ensure_ascii=False)

    def save_text(self, text: str) -> None:
        """Save a state made by :meth:`state_text`."""
        write_text_atomically(self.state(self.rank), text)

    def save(self, chunks: int) -> None:
        """Record the heap (for resume, or for rank 0 to merge) as of ``chunks`` chunks."""
        self.save_text(self.state_text(chunks))

    def _read(
        self, state: Path, data: bytes | None, chunks: int | None, written: Any = None
    ) -> list[dict[str, Any]]:
        """The sentences of a saved state, checked: ``chunks`` (when given) must be those it
        says it covers, and ``written(index)`` true for each sentence's index."""
        saved = read_json(state, "a seqtag most-uncertain state", data)
        if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
            raise OutputError(
                f"{state}: not a most-uncertain state of this seqtag (layout "
                f"{STATE_VERSION}); {_START_OVER}"
            )
        count, covered, sentences = saved.get("count"), saved.get("chunks"), saved.get("sentences")
        if count != self.heap.count or (chunks is not None and covered != chunks):
            raise ConfigError(
                f"{state} kept {count!r} sentences over {covered!r} chunks; this run asks for "
                f"{self.heap.count} after {chunks} chunks: resume with the same options"
            )
        if not isinstance(sentences, list) or len(sentences) > self.heap.count:
            raise OutputError(f"{state}: its sentences are not a list of at most {count}")
        seen: set[int] = set()
        for number, record in enumerate(sentences, 1):
            problem = check_sentence(record)
            if problem is None and record["index"] in seen:
                problem = f"index {record['index']} twice"
            if problem is None and written is not None and not written(record["index"]):
                problem = f"index {record['index']} is not in a chunk this process wrote"
            if problem:
                raise OutputError(f"{state}: sentence {number}: {problem}; {_START_OVER}")
            seen.add(record["index"])
        return sentences

    def write(self) -> None:
        """Rank 0, once every process has saved its heap: the merged choice, as ``F``."""
        merged = MostUncertain(self.heap.count)
        for record in self.heap.records():
            merged.add(record)
        for rank in range(self.world_size):
            if rank == self.rank:
                continue
            state = self.state(rank)
            if state.exists():  # a process with no chunk saved nothing
                for record in self._read(state, None, None):
                    merged.add(record)
        records = merged.records()
        fmt = self.input_format or (
            "jsonl" if any(r.get("extra") is not None for r in records) else "columns"
        )
        if fmt in SIDECAR_FORMATS:
            scores = [{"index": r["index"], "uncertainty": _rounded(r)} for r in records]
            write_text_atomically(self.sidecar, json.dumps(scores) + "\n")
        write_text_atomically(self.path, "".join(_format(r, fmt, self.tag_field) for r in records))

    def cleanup(self) -> None:
        """Rank 0, after the output is in place: remove every process's saved heap."""
        for rank in range(self.world_size):
            self.state(rank).unlink(missing_ok=True)


_START_OVER = (
    "delete the interrupted run's files (.partial, .progress.json, .uncertain.json) to start over"
)


def check_sentence(record: Any) -> str | None:
    """What is wrong with a saved sentence, in words; ``None`` when it is one seqtag writes.

    A dict with a whole ``index`` >= 0, an ``uncertainty`` in [0, 1], ``tokens`` and ``tags``
    (lists of strings of one length), ``extra`` (``None`` or an object) and ``spans`` (``None``
    or a list of span records).
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [key for key in ("index", "uncertainty", "tokens", "tags") if key not in record]
    if missing:
        return f"it has no {', '.join(map(repr, missing))}"
    index, uncertainty = record["index"], record["uncertainty"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return f"its index {index!r} is not a whole number >= 0"
    if not _number(uncertainty) or not 0.0 <= uncertainty <= 1.0:
        return f"its uncertainty {uncertainty!r} is not a number in [0, 1]"
    tokens, tags = record["tokens"], record["tags"]
    for name, values in (("tokens", tokens), ("tags", tags)):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"its {name} are not a list of strings"
    if len(tokens) != len(tags):
        return f"it has {len(tokens)} tokens and {len(tags)} tags"
    if record.get("extra") is not None and not isinstance(record["extra"], dict):
        return "its extra fields are not a JSON object"
    spans = record.get("spans")
    if spans is not None and not (
        isinstance(spans, list) and all(_span(span, len(tokens)) for span in spans)
    ):
        return "its spans are not span records within its tokens"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _span(span: Any, length: int) -> bool:
    if not isinstance(span, dict) or not isinstance(span.get("type"), str):
        return False
    start, end = span.get("start"), span.get("end")
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    return whole and 0 <= start < end <= length and _number(span.get("confidence"))


def _rounded(record: dict[str, Any]) -> float:
    return round(float(record["uncertainty"]), 4)


def _format(record: dict[str, Any], fmt: str, tag_field: str) -> str:
    """One sentence of ``F`` in the input's format, with its predicted tags."""
    tokens: Sequence[str] = record["tokens"]
    tags: Sequence[str] = record["tags"]
    if fmt == "conllu":
        upos, xpos = (tags, ["_"] * len(tags)) if tag_field == "upos" else (["_"] * len(tags), tags)
        lines = [f"# index = {record['index']}\n", f"# uncertainty = {_rounded(record):.4f}\n"]
        lines += [
            f"{i}\t{token}\t_\t{u}\t{x}\t_\t_\t_\t_\t_\n"
            for i, (token, u, x) in enumerate(zip(tokens, upos, xpos, strict=True), 1)
        ]
        return "".join(lines) + "\n"
    if fmt == "columns":
        return "".join(f"{t}\t{tag}\n" for t, tag in zip(tokens, tags, strict=True)) + "\n"
    if fmt == "text":
        return " ".join(tokens) + "\n"
    extra = {**(record.get("extra") or {}), "uncertainty": _rounded(record)}
    spans = record.get("spans")
    return format_jsonl(tokens, tags, None, extra, span_records(spans) if spans else spans)
