"""Exact resumption of interrupted training: random-number state and atomic checkpoints.

Resuming ``seqtag fit --ckpt_path last`` after a crash reaches the same weights as a run that
was never interrupted when three things come back exactly:

- the data position: the training loader (:class:`seqtag.data.batching.ResumableDataLoader`)
  saves its epoch and how many batches it has handed out, and skips them after a restore;
- the random-number streams behind dropout and word dropout: :class:`RNGStateCallback` saves
  torch's (CPU and CUDA), numpy's and Python's global generators in every checkpoint and puts
  them back when training starts again;
- the checkpoint itself: :class:`AtomicCheckpointIO` writes to a temporary file in the same
  folder and renames it over the old one, so a kill while saving leaves the previous
  ``last.ckpt`` intact instead of a truncated one.

:func:`install_resume_support` adds the last two to a Trainer (the CLI does it for you).
Everything saved is plain data or tensors: checkpoints still open with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO


def collect_rng_states() -> dict[str, Any]:
    """The global generators' states as tensors and plain Python values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states.get("torch.cuda") and torch.cuda.is_available():
        cuda = states["torch.cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if "numpy" in states:
        state = states["numpy"]
        keys = state["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
        )
    if "python" in states:
        state = states["python"]
        random.setstate((state["version"], tuple(state["state"]), state["gauss_next"]))


class RNGStateCallback(Callback):
    """Saves the global random-number states in each checkpoint; restores them on resume.

    The states are taken when the checkpoint is written (for a step checkpoint, right after
    that training step) and put back when training starts again, after the model, optimizer
    and loops are restored and after the sanity check, so the first resumed step draws the
    same dropout masks as the uninterrupted run did. Under DDP every process's state is
    gathered into the checkpoint (Lightning writes it on rank 0 but builds it on every rank)
    and each process gets its own back when the number of processes is unchanged.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": collect_rng_states()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            per_rank: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, state["rng"])
            state["per_rank"] = per_rank
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        states = self._pending.get("rng")
        per_rank = self._pending.get("per_rank")
        if per_rank and len(per_rank) == trainer.world_size:
            states = per_rank[trainer.global_rank]
        if states is not None:
            set_rng_states(states)
        self._pending = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, fsync, then ``os.replace``.

    Lightning's own writer (fsspec's transaction) writes local files to the system temporary
    folder and moves them into place; when that folder is on another file system the move is
    a copy straight into ``last.ckpt``, and a kill during it leaves a truncated checkpoint.
    Here the rename is always within one folder, hence atomic: readers see the old file or
    the complete new one, never a part. Remote paths (``s3://`` and so on) go to Lightning.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_path(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            os.chmod(temporary, _new_file_mode(target))  # mkstemp makes it owner-only
            with os.fdopen(handle, "wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(target.parent)


def _is_local_path(path: Any) -> bool:
    """A plain file system path (``/a/b``, ``file:///a/b``), not ``s3://`` and the like."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


def _new_file_mode(target: Path) -> int:
    """The mode a plain ``open(target, "wb")`` would give: the old file's, or 0o666 - umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def install_resume_support(trainer: pl.Trainer) -> None:
    """Add :class:`RNGStateCallback` and :class:`AtomicCheckpointIO` unless already there.

    The checkpoint writer is only replaced when it is Lightning's default
    ``TorchCheckpointIO``; a user's own plugin stays.
    """
    if not any(isinstance(callback, RNGStateCallback) for callback in trainer.callbacks):
        trainer.callbacks.append(RNGStateCallback())
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
