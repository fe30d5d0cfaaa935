"""Test-only callbacks for runs of ``python -m seqtag`` in subprocesses (kill, record, save).

The subprocesses import them with ``--trainer.callbacks+=resume_helpers.NAME`` and this folder
on ``PYTHONPATH`` (:data:`FOLDER`); the tests of resuming after a kill share them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

#: The folder to put on a subprocess's ``PYTHONPATH`` to import this module.
FOLDER = Path(__file__).resolve().parent
REPO = FOLDER.parent
CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"


def resumable_fit(
    train: Path | str, dev: Path, run: Path, *extra: str, timeout: int
) -> subprocess.CompletedProcess:
    """``python -m seqtag fit`` of a small run that can be killed and resumed exactly.

    The quick start's config on ``train`` (a corpus file or a prepared folder) and ``dev``, in
    batches of 8, hidden size 16, seed 42, 2 epochs, deterministic on one thread, with
    ``last.ckpt`` every 5 steps, the random-number state in checkpoints and the final weights
    in ``RUN/final.pt``; ``extra`` adds options (kills, ``--ckpt_path``...).
    """
    command = [
        sys.executable,
        "-m",
        "seqtag",
        "fit",
        "--config",
        str(CONFIG),
        f"--data.train_path={train}",
        f"--data.val_path={dev}",
        "--data.test_path=null",
        "--data.batch_size=8",
        "--model.init_args.hidden_size=16",
        "--seed_everything=42",
        "--trainer.max_epochs=2",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--last_checkpoint.every_n_train_steps=5",
        "--trainer.callbacks+=seqtag.checkpoint.resume.RNGStateCallback",
        "--trainer.callbacks+=resume_helpers.SaveFinalWeights",
        f"--trainer.callbacks.path={run / 'final.pt'}",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(FOLDER))
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


class KillAtStep(Callback):
    """SIGKILL this process once training reaches global step ``step``."""

    def __init__(self, step: int = 0):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtValidation(Callback):
    """SIGKILL this process as the validation after global step ``step`` starts."""

    def __init__(self, step: int = 0):
        self.step = step

    def on_validation_start(self, trainer, *args):
        if trainer.global_step == self.step and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGKILL)


class KillWhileSaving(Callback):
    """SIGKILL this process half-way through writing the checkpoint of step ``step``."""

    def __init__(self, step: int = 0):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        # Lightning runs checkpoint callbacks after the others: this step's save follows.
        if trainer.global_step != self.step:
            return

        def half_then_kill(obj, stream, *args, **kwargs):
            stream.write(b"PK\x03\x04" + bytes(4096))
            stream.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_kill


class RecordBatches(Callback):
    """Append each trained batch's step and sentence positions to a file (one per process
    under DDP: ``PATH.RANK``)."""

    def __init__(self, path: str = "batches.txt"):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        path = self.path if trainer.world_size == 1 else f"{self.path}.{trainer.global_rank}"
        with open(path, "a") as out:
            out.write(f"{trainer.global_step} {batch['index'].tolist()}\n")


class SaveFinalWeights(Callback):
    """Write the weights at the very end of training (last.ckpt may be older)."""

    def __init__(self, path: str = "final.pt"):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        torch.save({"step": trainer.global_step, "weights": pl_module.state_dict()}, self.path)
