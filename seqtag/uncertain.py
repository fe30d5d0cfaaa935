"""Choosing what to annotate next: the sentences the model is least sure about.

``seqtag predict --prediction.most_uncertain N --prediction.uncertain_output F`` ranks every
sentence by its uncertainty, ``1 -`` the probability of the predicted tag sequence
(:meth:`seqtag.models.tagger.Tagger.best_path_probability`), and writes the ``N`` highest (ties
go to the earlier sentence) to ``F`` in input order, in the input's format, with the predicted
tags as a pre-annotation.

Memory is O(N) whatever the input's size: each process keeps a bounded heap of its ``N`` most
uncertain sentences. When the main output is a file, the heap is saved (atomically) to
``F.rank{R}-of-{W}.uncertain.json`` before each chunk is recorded, so a resumed run starts
from it; adding a sentence already in the heap is a no-op, so a chunk tagged again after a
kill counts once. With several processes rank 0 merges the saved heaps at the end. ``F`` (and
its sidecar) are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqtag.errors import ConfigError, OutputError
from seqtag.paths import check_output_file, write_text_atomically
from seqtag.prediction_format import format_jsonl, span_records

#: Layout version of the saved heaps.
STATE_VERSION = 1
#: Formats that cannot hold a comment line: the uncertainties go to ``F.json`` instead.
SIDECAR_FORMATS = ("columns", "text")


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
        self.tag_field = tag_field
        self.rank, self.world_size = rank, world_size
        self.heap = MostUncertain(count)

    def state(self, rank: int) -> Path:
        return self.path.with_name(
            f"{self.path.name}.rank{rank}-of-{self.world_size}.uncertain.json"
        )

    def restore(self, chunks_done: int) -> None:
        """Continue an interrupted run that has ``chunks_done`` chunks in its output."""
        if chunks_done == 0:
            return  # every chunk is tagged again: start from an empty heap
        state = self.state(self.rank)
        try:
            saved = json.loads(state.read_text(encoding="utf-8"))
            records, chunks, count = saved["sentences"], int(saved["chunks"]), int(saved["count"])
        except FileNotFoundError:
            raise ConfigError(
                f"cannot resume with --prediction.most_uncertain: {state} is missing (the "
                "interrupted run did not keep its most uncertain sentences); start over"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OutputError(
                f"{state}: unreadable ({err}); delete the run's files to restart"
            ) from None
        if count != self.heap.count or chunks < chunks_done:
            raise ConfigError(
                f"{state} kept {count} sentences over {chunks} chunks; this run asks for "
                f"{self.heap.count} after {chunks_done} chunks: resume with the same options"
            )
        for record in records:
            self.heap.add(record)

    def save(self, chunks: int) -> None:
        """Record the heap (for resume, or for rank 0 to merge) as of ``chunks`` chunks."""
        record = {
            "version": STATE_VERSION,
            "count": self.heap.count,
            "chunks": chunks,
            "sentences": self.heap.records(),
        }
        write_text_atomically(self.state(self.rank), json.dumps(record, ensure_ascii=False))

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
                for record in json.loads(state.read_text(encoding="utf-8"))["sentences"]:
                    merged.add(record)
        records = merged.records()
        fmt = self.input_format or (
            "jsonl" if any(r.get("extra") is not None for r in records) else "columns"
        )
        if fmt in SIDECAR_FORMATS:
            scores = [{"index": r["index"], "uncertainty": _rounded(r)} for r in records]
            sidecar = self.path.with_name(self.path.name + ".json")
            write_text_atomically(sidecar, json.dumps(scores) + "\n")
        write_text_atomically(self.path, "".join(_format(r, fmt, self.tag_field) for r in records))

    def cleanup(self) -> None:
        """Rank 0, after the output is in place: remove every process's saved heap."""
        for rank in range(self.world_size):
            self.state(rank).unlink(missing_ok=True)


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
