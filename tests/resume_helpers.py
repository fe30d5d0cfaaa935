"""Test-only callbacks for runs of ``python -m seqtag`` in subprocesses (kill, record, save).

The subprocesses import them with ``--trainer.callbacks+=resume_helpers.NAME`` and this folder
on ``PYTHONPATH`` (:data:`FOLDER`); the tests of resuming after a kill share them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

#: The folder to put on a subprocess's ``PYTHONPATH`` to import this module.
FOLDER = Path(__file__).resolve().parent


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
