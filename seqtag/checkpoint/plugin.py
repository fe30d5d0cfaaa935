"""The trainer's one checkpoint plugin: every read validated, every local write atomic.

Lightning reads and writes checkpoints through a ``CheckpointIO`` plugin. seqtag's reads go
through :func:`seqtag.checkpoint.io.load_checkpoint` (``weights_only=True``, checked plain
data), and its writes never leave a half-written file: a kill while saving keeps the previous
``last.ckpt`` whole. The ``seqtag`` command installs it; in a plain ``Trainer`` add
``plugins=[SeqtagCheckpointIO()]``, or call
:func:`seqtag.checkpoint.resume.install_resume_support`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from seqtag.checkpoint.io import load_checkpoint
from seqtag.checkpoint.schema import EXTRA_STATE_KEY, is_plain_data
from seqtag.errors import CheckpointError
from seqtag.files.outputs import replaced_atomically, same_file


class SeqtagCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin with seqtag's validated reader and an atomic writer.

    Writes go to a temporary file beside the target, are fsynced, renamed over it, and the
    folder is fsynced. Lightning's own writer (fsspec's transaction) writes local files to the
    system temporary folder and moves them into place; when that folder is on another file
    system the move is a copy straight into ``last.ckpt``, and a kill during it leaves a
    truncated checkpoint. Remote paths (``s3://`` and so on) go to Lightning's writer.

    Args:
        preloaded: ``(path, checkpoint)`` a caller has already read with
            :func:`~seqtag.checkpoint.io.load_checkpoint` (the ``seqtag`` command reads
            ``--ckpt_path`` to take the model's arguments from it), so the trainer does not
            open the file again; used once, and only while the file is unchanged.
    """

    def __init__(self, preloaded: tuple[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self._preloaded = None
        if preloaded is not None:
            path, checkpoint = preloaded
            self._preloaded = (path, _stamp(path), checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None:
            name, stamp, checkpoint = preloaded
            if same_file(path, name) and _stamp(path) == stamp:
                return checkpoint
        try:
            return load_checkpoint(path)
        except CheckpointError:
            weights = _bare_state_dict(path)
            if weights is None:
                raise
            return weights

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_path(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(target) as temporary, open(temporary, "wb") as stream:
            torch.save(checkpoint, stream)
            stream.flush()
            os.fsync(stream.fileno())


def _bare_state_dict(path: Any) -> dict[str, Any] | None:
    """The file as a model's bare state dict, or ``None`` if it is not one.

    Lightning's ``ddp_spawn`` hands the trained weights back to the main process as a file
    holding ``state_dict()`` alone, written and read through this plugin. It is read with
    ``weights_only=True`` like any checkpoint, and accepted only as tensors by name plus the
    network's plain-data description, which the model checks when it loads them.
    """
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unreadable file: the checkpoint reader's error stands
        return None
    if not isinstance(weights, dict) or not weights:
        return None
    for key, value in weights.items():
        described = key == EXTRA_STATE_KEY and is_plain_data(value)
        if not isinstance(key, str) or not (isinstance(value, torch.Tensor) or described):
            return None
    return weights


def _stamp(path: Any) -> tuple[int, ...] | None:
    """What changes when a file is replaced or written: device, inode, size, modification."""
    try:
        status = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _is_local_path(path: Any) -> bool:
    """A plain file system path (``/a/b``, ``file:///a/b``), not ``s3://`` and the like."""
    text = str(path)
    return "://" not in text or text.startswith("file://")
