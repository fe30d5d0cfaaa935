"""Where predictions go: written as they come, in input order, crash-safe and resumable.

Each process appends its finished chunks (see :mod:`seqtag.data.streaming`) to its own part
file next to the output, ``OUTPUT.rank{R}-of-{W}.partial``, and after every chunk records the
part's length in ``OUTPUT.rank{R}-of-{W}.progress.json`` (after an ``fsync`` of the part). When
every process is done, rank 0 joins the parts in chunk order (chunk ``c`` is in part
``c % W``) into the output, by copying byte ranges, and renames it into place: the output
appears whole or not at all, and a second process never sends its predictions to the first.

After a kill, the same command with ``resume=True`` cuts each part back to its last recorded
chunk and continues with the next chunk, so the final output is byte for byte that of an
uninterrupted run. Each record also holds what the output depends on (fingerprints of the
input, the model and the options) and each chunk's length and checksum, and a resumed run
refuses, in one line, anything that differs (see :mod:`seqtag.prediction.progress`). Without
``resume``, leftover parts are refused rather than overwritten. Parts left by a run with
another number of processes hold other chunks: ``resume`` then starts over and removes them
(with a warning), as chunks tagged by other processes cannot be joined into this run's parts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, BinaryIO

from seqtag.errors import ConfigError, OutputError
from seqtag.files.outputs import check_output_file, write_text_atomically
from seqtag.prediction.progress import (
    PROGRESS_VERSION,
    Progress,
    chunk_checksum,
    difference,
    parse_progress,
)

__all__ = ["PROGRESS_VERSION", "OutputSink"]

log = logging.getLogger(__name__)


class OutputSink:
    """One process's share of a prediction output (or standard output for one process).

    Made in the writer's ``setup`` (checks only: nothing is written), then :meth:`start`
    (once the model is loaded: checks a resumed record against this run's fingerprint) and
    :meth:`open` (cuts the part back to the chunks kept and opens it for appending).

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
        self.resume = resume
        self.chunk_size: int | None = None
        self.fingerprint: dict[str, Any] = {}
        #: The checked record of the interrupted run being resumed (set by :meth:`start`).
        self.restored: Progress | None = None
        #: Digest of the most-uncertain state saved with the next chunk (see the writer).
        self.next_uncertain_digest: str | None = None
        self._lengths: list[int] = []
        self._checksums: list[str] = []
        self._uncertain: list[str | None] = []
        self._stream: BinaryIO | None = None
        self._opened_part = False
        if self.output is None:
            if world_size > 1:
                raise OutputError(
                    "several processes need --prediction.output, a file they can all write "
                    "beside (standard output is one process's)"
                )
            if resume:
                raise ConfigError(
                    "prediction.resume continues the parts an interrupted run left beside "
                    "its --prediction.output file; standard output has none"
                )
            return
        check_output_file(self.output)
        for own in (self.part(rank), self.progress(rank)):
            if own.is_symlink() or (own.exists() and not own.is_file()):
                raise OutputError(f"{own}: is not a regular file; delete it to start over")
        if not resume:
            for leftover, processes in self._leftovers():
                same = processes == world_size
                how = "" if same else f"{processes} processes and "
                raise OutputError(
                    f"{leftover} is left from an interrupted run: continue it with {how}"
                    "--prediction.resume true, or delete it to start over"
                )

    # -- file names --------------------------------------------------------------------------
    def part(self, rank: int) -> Path:
        return self.output.with_name(f"{self.output.name}.rank{rank}-of-{self.world_size}.partial")

    def progress(self, rank: int) -> Path:
        return self.output.with_name(
            f"{self.output.name}.rank{rank}-of-{self.world_size}.progress.json"
        )

    def _leftovers(self) -> list[tuple[Path, int]]:
        """Parts and progress records beside the output, of any number of processes, with
        that number (this run's own first)."""
        pattern = re.compile(
            re.escape(self.output.name) + r"\.rank\d+-of-(\d+)\.(?:partial|progress\.json)"
        )
        found = []
        try:
            names = sorted(os.listdir(self.output.parent or "."))
        except OSError:
            return []
        for name in names:
            match = pattern.fullmatch(name)
            if match:
                found.append((self.output.with_name(name), int(match.group(1))))
        return sorted(found, key=lambda item: item[1] != self.world_size)

    def _start_over(self) -> str:
        return f"delete {self.output.name}.rank*-of-{self.world_size}.* beside it to start over"

    # -- resuming ------------------------------------------------------------------------------
    def start(self, fingerprint: dict[str, Any]) -> None:
        """Note what this run's output depends on; when resuming, check the interrupted run's
        record against it, and its part against the record's lengths and checksums.

        Parts of a run with another number of processes are removed (by rank 0) when this
        run resumes: it starts over.

        Raises:
            ConfigError: the input, the model or the options differ from the interrupted
                run's.
            OutputError: the record or the part is damaged or was edited.
        """
        self.fingerprint = fingerprint
        if self.output is None:
            return
        progress = self.progress(self.rank)
        if self.resume and progress.exists():
            self.restored = self._check(progress)
        if self.resume and self.rank == 0:
            stale = [path for path, n in self._leftovers() if n != self.world_size]
            if stale:
                log.warning(
                    "%s: left by an interrupted run with another number of processes, whose "
                    "chunks this run's cannot continue; starting over and removing %d such files",
                    stale[0],
                    len(stale),
                )
                for path in stale:
                    path.unlink(missing_ok=True)

    def _check(self, progress: Path) -> Progress:
        start_over = self._start_over()
        state = parse_progress(progress, self.world_size, self.rank, start_over)
        problem = difference(state.fingerprint, self.fingerprint)
        if problem:
            raise ConfigError(
                f"{progress}: cannot resume: {problem}; resume with the same input, model and "
                f"options, or {start_over}"
            )
        part = self.part(self.rank)
        size = part.stat().st_size if part.is_file() else -1
        if size < sum(state.lengths):
            raise OutputError(
                f"{progress}: records {sum(state.lengths)} bytes of {part}, which "
                f"{'is missing' if size < 0 else f'holds {size}'}; {start_over}"
            )
        with open(part, "rb") as stream:
            for position, (length, checksum) in enumerate(
                zip(state.lengths, state.checksums, strict=True)
            ):
                data = stream.read(length)
                if chunk_checksum(self.rank + position * self.world_size, data) != checksum:
                    raise OutputError(
                        f"{progress}: chunk {position + 1} of {part} does not match the length "
                        f"and checksum recorded for it (the part or the record was edited); "
                        f"{start_over}"
                    )
        return state

    def open(self, keep: int | None = None) -> None:
        """Cut the part back to its first ``keep`` recorded chunks (all by default; none when
        not resuming) and open it for appending."""
        if self.output is None:
            return
        state = self.restored
        if state is not None:
            keep = len(state.lengths) if keep is None else keep
            self._lengths = state.lengths[:keep]
            self._checksums = state.checksums[:keep]
            self._uncertain = state.uncertain[:keep]
            self.chunk_size = state.chunk_size
        part = self.part(self.rank)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(part, flags, 0o666)
            self._stream = os.fdopen(descriptor, "wb")
            self._opened_part = True
            self._stream.truncate(sum(self._lengths))  # a half-written chunk goes
            self._stream.seek(0, os.SEEK_END)
        except OSError as err:
            raise OutputError(f"{part}: cannot write ({err.strerror or err})") from None
        if state is not None and keep < len(state.lengths):
            self._record()  # the record must not claim the chunks just cut

    @property
    def chunks_done(self) -> int:
        """How many of this process's chunks the output already holds."""
        return len(self._lengths)

    @property
    def offsets(self) -> list[int]:
        """Where each of this process's chunks ends in its part."""
        return self._progress().offsets

    def _progress(self) -> Progress:
        return Progress(
            self.chunk_size or 0,
            self.fingerprint,
            self._lengths,
            self._checksums,
            self._uncertain,
        )

    def _record(self) -> None:
        record = self._progress().record(self.world_size, self.rank)
        write_text_atomically(self.progress(self.rank), json.dumps(record))

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
        if self._stream is None:
            self.open()
        self.chunk_size = chunk_size
        data = text.encode("utf-8")
        self._stream.write(data)
        self._stream.flush()
        os.fsync(self._stream.fileno())
        chunk = self.rank + len(self._lengths) * self.world_size
        self._lengths.append(len(data))
        self._checksums.append(chunk_checksum(chunk, data))
        self._uncertain.append(self.next_uncertain_digest)
        self.next_uncertain_digest = None
        self._record()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def discard_if_unstarted(self) -> None:
        """Remove this process's part if a failure came before its first chunk.

        An empty part with no progress record holds nothing to resume; left behind, it would
        make the next run refuse to start (an error found before tagging, such as an option
        that does not fit the model, would then need a manual clean-up). Only a part this run
        opened is removed.
        """
        if self.output is None or self._lengths or self._stream is not None:
            return
        part = self.part(self.rank)
        if (
            self._opened_part
            and not self.progress(self.rank).exists()
            and part.is_file()
            and part.stat().st_size == 0
        ):
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
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            try:
                target = os.fdopen(os.open(joined, flags, 0o666), "wb")
            except OSError as err:
                raise OutputError(f"{joined}: cannot write ({err.strerror or err})") from None
            with target:
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
        return parse_progress(progress, self.world_size, rank, self._start_over()).offsets


def _copy_bytes(source, target, count: int) -> None:
    """Copy exactly ``count`` bytes from ``source`` to ``target``."""
    remaining = count
    while remaining:
        block = source.read(min(remaining, 1 << 20))
        if not block:
            raise OutputError(f"a part file ended {remaining} bytes early")
        target.write(block)
        remaining -= len(block)
