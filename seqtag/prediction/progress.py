"""What a resumed prediction must find as it was left, and how its records are read.

A resumed ``seqtag predict`` appends to the parts an interrupted run left (see
:mod:`seqtag.prediction.output`). The result equals an uninterrupted run's only when
everything the output depends on is unchanged: the input's bytes, the model's weights, the
options that shape what is written, and the parts themselves. So every progress record carries
a *fingerprint* of the first three and a byte length and checksum per chunk of the fourth; a
resumed run recomputes them and refuses, in one line, whatever differs, rather than append to
an output it cannot vouch for.

Fingerprints hash whole files (BLAKE2b, streamed: about a second per GB), once per run that
writes an output file; a run to standard output has nothing to resume and computes none.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqtag.errors import ConfigError, OutputError
from seqtag.files.outputs import same_file

#: Layout version of the progress files (1: offsets only, before fingerprints and checksums).
PROGRESS_VERSION = 2
#: Bytes of each BLAKE2b digest (32 hex digits): ample to tell edited bytes from written ones.
DIGEST_SIZE = 16
_BLOCK = 1 << 20


def digest(data: bytes) -> str:
    """The hex BLAKE2b digest of ``data``."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).hexdigest()


def chunk_checksum(chunk: int, data: bytes) -> str:
    """The checksum of chunk number ``chunk``'s output bytes.

    The chunk's number is hashed with its bytes, so that a record whose entries were
    duplicated or reordered fails even where two chunks happen to hold the same text.
    """
    hasher = hashlib.blake2b(f"{chunk}\n".encode(), digest_size=DIGEST_SIZE)
    hasher.update(data)
    return hasher.hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and BLAKE2b digest of the whole file, read in blocks (memory stays flat)."""
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
    size = 0
    try:
        with open(path, "rb") as stream:
            while block := stream.read(_BLOCK):
                hasher.update(block)
                size += len(block)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot read it to fingerprint it ({err.strerror or err})"
        ) from None
    return {"size": size, "blake2b": hasher.hexdigest()}


def module_fingerprint(module: torch.nn.Module) -> dict[str, Any]:
    """BLAKE2b digest of a model's state dict (names, dtypes, shapes and values).

    For a model that was not restored from a checkpoint file, which therefore has no file to
    fingerprint.
    """
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for name, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{name}\n{flat.dtype}\n{tuple(tensor.shape)}\n".encode())
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return {"state_dict_blake2b": hasher.hexdigest()}


#: The prediction writer's options in a resumed run's fingerprint (with the data options).
WRITER_OPTIONS = ("confidences", "format", "min_confidence", "most_uncertain", "uncertain_output")
#: Data options that cannot change what prediction writes (training files and batches, the
#: loader's workers, the vector cache, the fields of sentences given in memory, which a
#: resumable run never reads); every other one is in a resumed run's fingerprint,
#: and the input's path is replaced by its content's fingerprint.
NOT_IN_OUTPUT = frozenset(
    {
        "train_path",
        "val_path",
        "test_path",
        "predict_path",
        "batch_size",
        "max_batch_tokens",
        "num_workers",
        "vectors_cache",
        "seed",
        "pool_size",
        "val_from_train",
        "token_key",
        "tag_key",
    }
)


def run_fingerprint(
    options: Mapping[str, Any],
    data: Mapping[str, Any],
    checkpoint: str | None,
    module: torch.nn.Module,
) -> dict[str, Any]:
    """What a prediction run's output depends on, as a resumed run must find it.

    Args:
        options: the writer's options (``confidences``, ``format``, ...), by name.
        data: the DataModule's hyper-parameters (``predict_path`` is fingerprinted by content;
            standard input cannot be, and is recorded as such).
        checkpoint: the checkpoint file the model was loaded from; ``None`` fingerprints the
            model's state dict instead.
        module: the model.
    """
    source = data.get("predict_path")
    named = {f"prediction.{name}": value for name, value in options.items()}
    if named.get("prediction.uncertain_output"):
        named["prediction.uncertain_output"] = os.path.abspath(named["prediction.uncertain_output"])
    named.update({f"data.{k}": v for k, v in data.items() if k not in NOT_IN_OUTPUT})
    return {
        # A pipe (``-``, ``<(zcat ...)``) cannot be read twice: it is recorded, not hashed.
        "input": file_fingerprint(source) if _regular(source) else {"stream": source},
        "checkpoint": file_fingerprint(checkpoint) if checkpoint else module_fingerprint(module),
        "options": plain(named),
    }


def _regular(path: str | None) -> bool:
    return bool(path) and path != "-" and os.path.isfile(path)


def output_file(output: str | None) -> str | None:
    """The output file, or ``None`` for standard output (unset, empty or ``-``)."""
    return None if output in (None, "", "-") else output


def checkpoint_file(trainer: Any) -> str | None:
    """The local checkpoint file the trainer loaded (or will load), if any."""
    path = getattr(trainer, "ckpt_path", None)
    if not path or "://" in str(path) or not os.path.isfile(path):
        return None
    return str(path)


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists, other objects as text), so that an
    option compares equal to its saved copy."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def check_distinct(
    writes: Mapping[str, str | os.PathLike[str] | None],
    reads: Mapping[str, str | os.PathLike[str] | None],
) -> None:
    """Refuse a file to write that is a file read, or another file to write.

    Args:
        writes: what each output is called in messages (``prediction.output``), and its path.
        reads: the same for the inputs (``the input (data.predict_path)``); ``None`` and
            ``-`` (standard input or output) are skipped everywhere.
    """
    given = {name: path for name, path in writes.items() if path not in (None, "", "-")}
    sources = {name: path for name, path in reads.items() if path not in (None, "", "-")}
    names = list(given)
    for position, name in enumerate(names):
        for other, path in [*sources.items(), *((n, given[n]) for n in names[:position])]:
            if same_file(given[name], path):
                raise ConfigError(
                    f"{name} {given[name]} is {other}: writing it would destroy that file; "
                    "choose another file"
                )


def check_prediction_files(
    output: str | None,
    uncertain_output: str | None,
    sidecar: str | os.PathLike[str] | None,
    predict_path: str | None,
    checkpoint: str | None,
) -> None:
    """:func:`check_distinct` for the files of ``seqtag predict``: the output, the uncertain
    output and its sidecar (each ``None`` when not written) against the input and the
    checkpoint, and against each other."""
    check_distinct(
        {
            "prediction.output": output,
            "prediction.uncertain_output": uncertain_output,
            "the sidecar of prediction.uncertain_output": sidecar,
        },
        {
            "the input (data.predict_path)": predict_path,
            "the checkpoint it predicts with (ckpt_path)": checkpoint,
        },
    )


def refuse_on_every_process(trainer: Any, failure: BaseException | None) -> None:
    """Raise ``failure`` here, and the same refusal on every other process if any failed.

    Resume checks differ between processes (each its own part); a process that raised alone
    would leave the others waiting for it forever. Every process raises the first failing
    process's message, so all of them print the same line.
    """
    if trainer.world_size > 1:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            messages: list[str | None] = [None] * torch.distributed.get_world_size()
            mine = None if failure is None else str(failure)
            torch.distributed.all_gather_object(messages, mine)
            first = next((message for message in messages if message), None)
            if first is not None and first != mine:
                raise ConfigError(first)
        elif trainer.strategy.reduce_boolean_decision(failure is not None, all=False):
            raise failure or ConfigError(
                "another process refused to resume the prediction output (its error says why)"
            )
    if failure is not None:
        raise failure


def read_json(path: Path, what: str, data: bytes | None = None) -> Any:
    """The JSON value in ``path`` (or in ``data``, its bytes already read); anything that is
    not JSON is one line naming the file.

    Nesting deep enough to exhaust Python's recursion, text that is not UTF-8 or not JSON
    (``NaN`` included), and an unreadable file are all :class:`OutputError`, with the line
    where there is one.
    """
    try:
        text = path.read_bytes().decode() if data is None else data.decode()
    except UnicodeDecodeError:
        raise OutputError(f"{path}: not UTF-8 text, so not {what}") from None
    except OSError as err:
        raise OutputError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise OutputError(f"{path}:{err.lineno}: not {what}: {err.msg}") from None
    except RecursionError:
        raise OutputError(f"{path}: nested too deeply to be {what}") from None
    except ValueError as err:
        raise OutputError(f"{path}: not {what}: {err}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass
class Progress:
    """One process's progress record, checked: what each of its chunks wrote."""

    chunk_size: int
    fingerprint: dict[str, Any]
    lengths: list[int]
    checksums: list[str]
    #: Digest of the most-uncertain state saved with each chunk (``None``: none kept).
    uncertain: list[str | None]

    @property
    def offsets(self) -> list[int]:
        """Where each chunk ends in the part."""
        ends, total = [], 0
        for length in self.lengths:
            total += length
            ends.append(total)
        return ends

    def record(self, world_size: int, rank: int) -> dict[str, Any]:
        """As written to the progress file."""
        return {
            "version": PROGRESS_VERSION,
            "world_size": world_size,
            "rank": rank,
            "chunk_size": self.chunk_size,
            "fingerprint": self.fingerprint,
            "lengths": self.lengths,
            "checksums": self.checksums,
            "uncertain": self.uncertain,
        }


def parse_progress(path: Path, world_size: int, rank: int, start_over: str) -> Progress:
    """Read and check the progress record at ``path`` of process ``rank`` of ``world_size``.

    Args:
        start_over: what to tell the user to delete to start over, ending every refusal.

    Raises:
        OutputError: not a progress record of this layout, or values out of range (a
            negative, fractional or missing length, a malformed checksum).
    """

    def refuse(problem: str) -> OutputError:
        return OutputError(f"{path}: {problem}; {start_over}")

    state = read_json(path, "a seqtag progress record")
    if not isinstance(state, dict):
        raise refuse("not a seqtag progress record (expected a JSON object)")
    version = state.get("version")
    if version != PROGRESS_VERSION:
        raise refuse(
            f"written in progress layout {version!r}, this seqtag reads {PROGRESS_VERSION} "
            "(the record does not say what its output depends on)"
        )
    for key, expected in (("world_size", world_size), ("rank", rank)):
        if state.get(key) != expected or not _whole(state.get(key)):
            raise refuse(f"its {key} is {state.get(key)!r}, this process's is {expected}")
    chunk_size = state.get("chunk_size")
    if not _whole(chunk_size) or chunk_size < 1:
        raise refuse(f"its chunk_size {chunk_size!r} is not a whole number >= 1")
    fingerprint = state.get("fingerprint")
    if not isinstance(fingerprint, dict):
        raise refuse("it has no fingerprint of the input, model and options")
    lengths, checksums = state.get("lengths"), state.get("checksums")
    uncertain = state.get("uncertain")
    if not isinstance(lengths, list) or not isinstance(checksums, list):
        raise refuse("its lengths and checksums are not lists")
    for length in lengths:
        if not _whole(length):
            raise refuse(f"the chunk length {length!r} is not a whole number of bytes")
        if length < 0:
            raise refuse(f"the chunk length {length} is negative")
    if len(checksums) != len(lengths) or not all(map(_hex_digest, checksums)):
        raise refuse("its checksums are not one hex digest per chunk")
    if not isinstance(uncertain, list) or len(uncertain) != len(lengths):
        raise refuse("its uncertain-state digests are not one per chunk")
    if not all(d is None or _hex_digest(d) for d in uncertain):
        raise refuse("its uncertain-state digests are not hex digests")
    return Progress(chunk_size, fingerprint, lengths, checksums, uncertain)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex_digest(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 2 * DIGEST_SIZE
        and all(c in "0123456789abcdef" for c in value)
    )


def difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """What differs between a saved fingerprint and this run's, in words; ``None`` if nothing.

    Both are ``{"input": ..., "checkpoint": ..., "options": {name: value}}``.
    """
    for part, words in (("input", "the input file"), ("checkpoint", "the model (checkpoint)")):
        if saved.get(part) != current.get(part):
            was, now = saved.get(part) or {}, current.get(part) or {}
            if isinstance(was, dict) and was.get("size") != now.get("size"):
                sizes = f"{was.get('size')} bytes then, {now.get('size')} now"
                return f"{words} changed since the interrupted run ({sizes})"
            return f"{words} changed since the interrupted run (its content differs)"
    was, now = saved.get("options"), current.get("options") or {}
    if not isinstance(was, dict):
        return "the record has no output options"
    changed = [name for name in sorted(set(was) | set(now)) if was.get(name) != now.get(name)]
    if changed:
        shown = ", ".join(
            f"{name} was {_shown(was.get(name))}, is now {_shown(now.get(name))}"
            for name in changed[:3]
        )
        return f"other options than the interrupted run's: {shown}"
    return None


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
