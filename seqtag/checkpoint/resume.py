"""Exact resumption of interrupted training: random-number state and atomic checkpoints.

Resuming ``seqtag fit --ckpt_path last`` after a crash reaches the same weights as a run that
was never interrupted when three things come back exactly:

- the data position: the training loader (:class:`seqtag.data.sampling.ResumableDataLoader`)
  saves its epoch and how many batches it has handed out, and skips them after a restore;
- the random-number streams behind dropout and word dropout: :class:`RNGStateCallback` saves
  torch's (CPU and CUDA), numpy's and Python's global generators in every checkpoint and puts
  them back when training starts again;
- the checkpoint itself: :class:`~seqtag.checkpoint.plugin.SeqtagCheckpointIO` writes to a
  temporary file in the same folder and renames it over the old one, so a kill while saving
  leaves the previous ``last.ckpt`` intact instead of a truncated one.

Besides, a step checkpoint written after a training batch that validation follows (an
epoch's last batch, or a ``val_check_interval`` batch) is marked as taken before that
validation (:class:`PendingValidation`): Lightning would otherwise resume it as if the
validation had run, so the resumed run would miss that epoch's metrics and the random draw of
the validation loader, which shifts every later dropout mask. And restored ``ModelCheckpoint``
state naming files outside the run's checkpoint folder is dropped with a warning
(:class:`seqtag.checkpoint.run_folder.CheckpointFolderGuard`), so a checkpoint from elsewhere
cannot make
the new run overwrite or delete another run's files.

:func:`install_resume_support` adds all of these to a Trainer (the CLI does it for you). A
damaged random-number state or optimizer state (:mod:`seqtag.checkpoint.optimizer_state`) is a
:class:`~seqtag.errors.CheckpointError` naming the file, before training starts. Everything
saved is plain data or tensors: checkpoints still open with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from seqtag.checkpoint.optimizer_state import OptimizerStateCheck
from seqtag.checkpoint.plugin import SeqtagCheckpointIO
from seqtag.checkpoint.run_folder import CheckpointFolderGuard
from seqtag.errors import CheckpointError

log = logging.getLogger(__name__)


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


#: What torch, numpy and ``random`` raise for a state they cannot take.
_STATE_ERRORS = (
    RuntimeError,
    IndexError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
)


def rng_state_problem(state: Any) -> str | None:
    """Why :class:`RNGStateCallback`'s stored ``state`` cannot be restored, or ``None``.

    Each stored generator state (the process's own and, after DDP, every process's) is put
    into the generators on trial, the way :func:`set_rng_states` will, and the generators are
    set back to what they were: whatever torch, numpy or ``random`` refuse shows here.
    """
    if not isinstance(state, Mapping):
        return f"a {type(state).__name__} instead of a dictionary"
    per_rank = state.get("per_rank")
    if per_rank is not None and not isinstance(per_rank, list):
        return f"'per_rank' is a {type(per_rank).__name__}, not a list"
    candidates = [state.get("rng"), *(per_rank or [])]
    if candidates[0] is None and not per_rank:
        return "no 'rng' entry"
    before = collect_rng_states()
    try:
        for states in candidates:
            if states is None:
                continue
            if not isinstance(states, Mapping) or not isinstance(states.get("torch"), torch.Tensor):
                return "no torch generator state"
            try:
                set_rng_states(states)  # type: ignore[arg-type]
            except _STATE_ERRORS as err:
                return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    finally:
        set_rng_states(before)
    return None


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

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse a stored state that cannot be put back, before training starts.

        Runs before :meth:`load_state_dict`, where the file's name is still known, so an edited
        state is one line naming the file instead of a ``RuntimeError`` from deep inside torch,
        numpy or ``random`` at the first resumed step.
        """
        callbacks = checkpoint.get("callbacks")
        state = callbacks.get(self.state_key) if isinstance(callbacks, Mapping) else None
        if state is None:
            log.warning(
                "%s has no random-number state (written without %s): the resumed run's "
                "dropout masks will differ from an uninterrupted run's",
                trainer.ckpt_path,
                type(self).__name__,
            )
            return
        problem = rng_state_problem(state)
        if problem is not None:
            raise CheckpointError(
                f"{trainer.ckpt_path}: cannot resume training from it: its random-number state "
                f"is damaged ({problem}; the file was edited?)"
            )

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


class PendingValidation(Callback):
    """Marks a checkpoint taken after a training batch that validation follows as such.

    ``ModelCheckpoint`` writes step checkpoints in ``on_train_batch_end``; when the batch is
    the epoch's last (or a ``val_check_interval`` batch) the validation runs only after that.
    Lightning restores such a checkpoint as if the validation had already run: it is never
    run, nor (at an epoch's end) the rest of the epoch's end. The resumed run then lacks that
    validation's metrics (a callback monitoring them keeps an older best) and the random draw
    its data loader makes, so every later dropout mask differs. Here the saved loop state says
    what was true: the batch done, the validation begun and none of its batches run; Lightning
    resumes that by running the whole validation, then goes on as the uninterrupted run did.

    A run resumed with validation turned off at that point (``--trainer.limit_val_batches 0``,
    another ``check_val_every_n_epoch``) cannot match the original anyway; for it the mark is
    taken back on loading, so Lightning ends the epoch as it would have without it.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if _validation_follows(trainer) and _set_validation_begun(checkpoint, True):
            checkpoint.setdefault("callbacks", {})[self.state_key] = {"validation_begun": True}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        callbacks = checkpoint.get("callbacks")
        state = callbacks.get(self.state_key) if isinstance(callbacks, Mapping) else None
        if not isinstance(state, Mapping) or state.get("validation_begun") is not True:
            return
        epoch = checkpoint.get("epoch")
        every = trainer.check_val_every_n_epoch
        validates = trainer.enable_validation and (
            every is None or (isinstance(epoch, int) and (epoch + 1) % every == 0)
        )
        if not validates:
            _set_validation_begun(checkpoint, False)


def _validation_follows(trainer: pl.Trainer) -> bool:
    """Saving inside ``on_train_batch_end`` of a batch after which Lightning validates."""
    if trainer.state.fn != TrainerFn.FITTING or not trainer.training or trainer.sanity_checking:
        return False
    epoch_loop = trainer.fit_loop.epoch_loop
    done = epoch_loop.batch_progress.current
    if not done.ready == done.started == done.processed == done.completed + 1:
        return False  # not between a batch's optimizer step and its end
    should_validate = getattr(epoch_loop, "_should_check_val_fx", None)
    fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
    return should_validate is not None and fetcher is not None and bool(should_validate(fetcher))


def _set_validation_begun(checkpoint: dict[str, Any], begun: bool) -> bool:
    """Rewrite the loop state of a checkpoint taken in ``on_train_batch_end`` to the moment
    after the batch's end with the validation just begun (``begun``), or back to what Lightning
    wrote. ``False`` when the loop state is not one this knows (left as it is)."""
    loops = checkpoint.get("loops")
    loops = loops.get("fit_loop") if isinstance(loops, Mapping) else None
    if not isinstance(loops, Mapping):
        return False
    batches = loops.get("epoch_loop.batch_progress")
    validation = loops.get("epoch_loop.val_loop.batch_progress")
    try:
        for counts in (batches["total"], batches["current"]):
            counts["completed"] = counts["processed"] - (0 if begun else 1)
        done = int(validation["total"]["completed"])
    except (KeyError, TypeError, ValueError):
        return False
    # One validation batch fetched, none run: what Lightning calls restarted mid-evaluation.
    fetched = 1 if begun else 0
    validation["total"] = {
        "ready": done + fetched,
        "started": done + fetched,
        "processed": done,
        "completed": done,
    }
    validation["current"] = {"ready": fetched, "started": fetched, "processed": 0, "completed": 0}
    validation["is_last_batch"] = False
    return True


def install_resume_support(trainer: pl.Trainer) -> None:
    """Add :class:`RNGStateCallback`, :class:`PendingValidation`,
    :class:`~seqtag.checkpoint.run_folder.CheckpointFolderGuard`,
    :class:`~seqtag.checkpoint.optimizer_state.OptimizerStateCheck` and
    :class:`~seqtag.checkpoint.plugin.SeqtagCheckpointIO`
    unless already there.

    The checkpoint writer is only replaced when it is Lightning's default
    ``TorchCheckpointIO``; a user's own plugin stays.
    """
    for kind in (RNGStateCallback, PendingValidation, CheckpointFolderGuard, OptimizerStateCheck):
        if not any(isinstance(callback, kind) for callback in trainer.callbacks):
            trainer.callbacks.append(kind())
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = SeqtagCheckpointIO()
