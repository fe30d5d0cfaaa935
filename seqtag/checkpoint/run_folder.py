"""A training run writes and deletes files only inside its own checkpoint folder.

A checkpoint remembers the files its run wrote: ``ModelCheckpoint``'s ``best_model_path``,
``last_model_path``, ``best_k_models`` and ``kth_best_model_path``. Restored into a new run
(``seqtag fit --ckpt_path FILE --checkpoint.dirpath NEW``), Lightning would delete those files
when better ones come, and seqtag's end-of-fit calibration would rewrite them: for a checkpoint
from another folder, or an edited one, they are another run's files, or anyone's.

- :class:`CheckpointFolderGuard` drops restored state naming anything but checkpoint files in
  the callback's own folder, with a warning (``seqtag fit`` adds it);
- :func:`inside_folder` is the test, which the calibration applies again to every file it
  rewrites (:func:`seqtag.calibration.temperature.TemperatureCalibration`);
- :func:`refuse_another_runs_folder` keeps a new run out of a folder holding another run's
  checkpoints (``seqtag fit`` asks it before the first epoch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from seqtag.errors import ConfigError
from seqtag.files.outputs import check_output_folder, same_file

__all__ = ["CheckpointFolderGuard", "inside_folder", "refuse_another_runs_folder"]

log = logging.getLogger(__name__)

#: The entries of a ``ModelCheckpoint`` state that name files.
_PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")


def inside_folder(name: Any, folder: str | os.PathLike[str], extension: str = "") -> bool:
    """``name`` is a path (a string) of a file inside ``folder``, ending in ``extension``.

    Local paths are compared after resolving links and ``..``, so neither ``NEW/../OLD/x.ckpt``
    nor a link in ``NEW`` to a file elsewhere is inside ``NEW``. Remote ones (``s3://...``) are
    compared as text, and must not climb out with ``..``.
    """
    if not isinstance(name, str) or not name or not name.endswith(extension):
        return False
    folder = os.fspath(folder)
    if not (_is_local(folder) and _is_local(name)):
        root = folder.rstrip("/") + "/"
        return name.startswith(root) and ".." not in name[len(root) :].split("/")
    real_folder = os.path.realpath(folder.removeprefix("file://"))
    real = os.path.realpath(name.removeprefix("file://"))
    return real != real_folder and os.path.commonpath([real_folder, real]) == real_folder


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


class CheckpointFolderGuard(Callback):
    """Drops restored ``ModelCheckpoint`` state that names files outside that callback's folder.

    Every file the state names must be a checkpoint file (``.ckpt``) inside the callback's
    ``dirpath``; otherwise all the files and scores it tracked are forgotten, with a warning
    naming them, and the new run keeps track of its own files only. (Lightning itself forgets
    the scores when the folder differs, but keeps ``best_model_path``.) A run resumed in its own
    folder, the usual case, keeps its state.
    """

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict):
            return
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
                continue
            state = states.get(callback.state_key)
            if not isinstance(state, dict):
                continue
            outside = _files_outside(state, callback.dirpath, callback.FILE_EXTENSION)
            if outside:
                more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
                log.warning(
                    "%s: its %s state names files outside %s (%s): forgotten; this run tracks, "
                    "replaces and calibrates only its own files there",
                    trainer.ckpt_path,
                    type(callback).__name__,
                    callback.dirpath,
                    ", ".join(outside[:3]) + more,
                )
                states[callback.state_key] = _forget_files(state)


def _files_outside(state: Mapping[str, Any], folder: str, extension: str) -> list[str]:
    """The entries of a ``ModelCheckpoint`` state that are not checkpoint files in ``folder``."""
    named = [state.get(key) for key in _PATH_KEYS]
    models = state.get("best_k_models")
    if models is not None and not isinstance(models, Mapping):
        return [f"best_k_models={models!r}"]
    named += list(models or {})
    outside = [repr(name) for name in named if name and not inside_folder(name, folder, extension)]
    return list(dict.fromkeys(outside))  # best_model_path is among best_k_models too


def _forget_files(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the files and scores it tracked, as a new ``ModelCheckpoint`` has."""
    kept = {k: v for k, v in state.items() if k not in ("kth_best_model_path", "kth_value")}
    kept.update(best_model_path="", last_model_path="", best_k_models={}, best_model_score=None)
    return kept


def refuse_another_runs_folder(folder: str | os.PathLike[str], resumed: str | None) -> None:
    """Refuse a checkpoint folder that cannot be written, or that holds another run's
    checkpoints, before the first epoch rather than after it.

    Resuming is writing into a folder with checkpoints only when it resumes that folder's own
    ``last.ckpt`` (``resumed`` is the run's ``--ckpt_path``): resuming from elsewhere into it
    would replace that run's files.
    """
    check_output_folder(folder)
    own_last = Path(folder) / "last.ckpt"
    if resumed == "last" or (resumed and same_file(resumed, own_last)):
        return
    earlier = sorted(p.name for p in Path(folder).glob("*.ckpt"))
    if earlier:
        how = (
            f"resume it with --ckpt_path {own_last}"
            if not resumed
            else f"--ckpt_path {resumed} is not its last.ckpt; resume that with "
            f"--ckpt_path {own_last}"
        )
        raise ConfigError(
            f"{folder} already holds {', '.join(earlier)} from another run: {how}, write this "
            "run elsewhere with --checkpoint.dirpath DIR, or delete the old files first"
        )
