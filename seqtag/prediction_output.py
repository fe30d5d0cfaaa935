"""Where predictions go: written as they come, in input order, crash-safe and resumable.

Each process appends its finished chunks (see :mod:`seqtag.data.streaming`) to its own part
file next to the output, ``OUTPUT.rank{R}-of-{W}.partial``, and after every chunk records the
part's length in ``OUTPUT.rank{R}-of-{W}.progress.json`` (after an ``fsync`` of the part). When
every process is done, rank 0 joins the parts in chunk order (chunk ``c`` is in part
``c % W``) into the output, by copying byte ranges, and renames it into place: the output
appears whole or not at all, and a second process never sends its predictions to the first.

After a kill, the same command with ``resume=True`` cuts each part back to its last recorded
chunk and continues with the next chunk, so the final output is byte for byte that of an
uninterrupted run. Without ``resume``, leftover parts are refused rather than overwritten.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

from seqtag.errors import OutputError
from seqtag.paths import check_output_file, write_text_atomically

#: Layout version of the progress files.
PROGRESS_VERSION = 1


class OutputSink:
    """One process's share of a prediction output (or standard output for one process).

    Args:
        output: the file to produce, or ``None`` for standard output.
        rank: this process's rank.
        world_size: the number of processes.
        resume: continue the parts an interrupted run left.
    """

    def __init__(self, output: str | None, rank: int, world_size: int, resume: bool) -> None:
        self.output = Path(output) if output else None
        self.rank = rank
        self.world_size = world_size
        self.offsets: list[int] = []  # end of each chunk written, in bytes
        self.chunk_size: int | None = None
        self._stream: TextIO | None = None
        if self.output is None:
            if world_size > 1:
                raise OutputError(
                    "several processes need --prediction.output, a file they can all write "
                    "beside (standard output is one process's)"
                )
            return
        check_output_file(self.output)
        part, progress = self.part(rank), self.progress(rank)
        if resume and progress.exists():
            self._restore(progress, part)
        elif not resume and (part.exists() or progress.exists()):
            raise OutputError(
                f"{part} is left from an interrupted run: continue it with "
                "--prediction.resume true, or delete it to start over"
            )
        try:
            self._stream = open(part, "a" if self.offsets else "w", encoding="utf-8")  # noqa: SIM115
        except OSError as err:
            raise OutputError(f"{part}: cannot write ({err.strerror or err})") from None

    # -- file names --------------------------------------------------------------------------
    def part(self, rank: int) -> Path:
        return self.output.with_name(f"{self.output.name}.rank{rank}-of-{self.world_size}.partial")

    def progress(self, rank: int) -> Path:
        return self.output.with_name(
            f"{self.output.name}.rank{rank}-of-{self.world_size}.progress.json"
        )

    def _restore(self, progress: Path, part: Path) -> None:
        try:
            state = json.loads(progress.read_text(encoding="utf-8"))
            offsets = [int(n) for n in state["offsets"]]
            chunk_size = int(state["chunk_size"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OutputError(f"{progress}: unreadable progress record ({err})") from None
        if not part.exists() or part.stat().st_size < (offsets[-1] if offsets else 0):
            raise OutputError(f"{part}: shorter than its progress record; delete both to restart")
        with open(part, "r+b") as stream:
            stream.truncate(offsets[-1] if offsets else 0)  # drop a half-written chunk
        self.offsets, self.chunk_size = offsets, chunk_size

    @property
    def chunks_done(self) -> int:
        """How many of this process's chunks the output already holds."""
        return len(self.offsets)

    # -- writing -------------------------------------------------------------------------------
    def write_chunk(self, text: str, chunk_size: int) -> None:
        """Append one finished chunk and record it (durably, before the next one starts)."""
        if self.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        if self.chunk_size is not None and chunk_size != self.chunk_size:
            raise OutputError(
                f"{self.part(self.rank)} was written with chunks of {self.chunk_size} sentences, "
                f"this run reads {chunk_size}: resume with the same data.predict_chunk_size"
            )
        self.chunk_size = chunk_size
        self._stream.write(text)
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self.offsets.append(self._stream.tell())
        record = {
            "version": PROGRESS_VERSION,
            "chunk_size": chunk_size,
            "world_size": self.world_size,
            "offsets": self.offsets,
        }
        write_text_atomically(self.progress(self.rank), json.dumps(record))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def discard_if_unstarted(self) -> None:
        """Remove this process's part if a failure came before its first chunk.

        An empty part with no progress record holds nothing to resume; left behind, it would
        make the next run refuse to start (an error found before tagging, such as an option
        that does not fit the model, would then need a manual clean-up).
        """
        if self.output is None or self.offsets or self._stream is not None:
            return
        part = self.part(self.rank)
        if not self.progress(self.rank).exists() and part.exists() and part.stat().st_size == 0:
            part.unlink(missing_ok=True)

    def join(self) -> None:
        """Rank 0, once every process has closed its part: the parts, in order, as the output."""
        if self.output is None:
            return
        offsets = [self._read_offsets(rank) for rank in range(self.world_size)]
        joined = self.output.with_name(self.output.name + ".joining")
        if self.world_size == 1:
            os.replace(self.part(0), joined)
        else:
            with open(joined, "wb") as target:
                sources = [open(self.part(rank), "rb") for rank in range(self.world_size)]  # noqa: SIM115
                try:
                    for chunk in range(sum(len(o) for o in offsets)):
                        rank, position = chunk % self.world_size, chunk // self.world_size
                        start = offsets[rank][position - 1] if position else 0
                        sources[rank].seek(start)
                        _copy_bytes(sources[rank], target, offsets[rank][position] - start)
                finally:
                    for source in sources:
                        source.close()
                target.flush()
                os.fsync(target.fileno())
        os.replace(joined, self.output)
        for rank in range(self.world_size):
            for leftover in (self.part(rank), self.progress(rank)):
                leftover.unlink(missing_ok=True)

    def _read_offsets(self, rank: int) -> list[int]:
        if rank == self.rank:
            return self.offsets
        progress = self.progress(rank)
        if not progress.exists():
            return []  # that process had no chunk (fewer chunks than processes)
        return [int(n) for n in json.loads(progress.read_text(encoding="utf-8"))["offsets"]]


def _copy_bytes(source, target, count: int) -> None:
    """Copy exactly ``count`` bytes from ``source`` to ``target``."""
    remaining = count
    while remaining:
        block = source.read(min(remaining, 1 << 20))
        if not block:
            raise OutputError(f"a part file ended {remaining} bytes early")
        target.write(block)
        remaining -= len(block)
