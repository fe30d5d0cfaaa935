"""``seqtag serve``: the command line of :func:`seqtag.serving.server.serve`.

``seqtag serve --ckpt_path M [--port 8000] ...`` is a subcommand of the ``seqtag`` command
(:meth:`seqtag.cli.trainer.SeqtagTrainer.serve`). The trainer it builds is not run; it gives
the server its device (``--trainer.accelerator``, ``--trainer.devices``) and the thread policy
(``--threads.enabled``, ``--threads.interval_s``), as for ``seqtag predict``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from seqtag.runtime.thread_policy import ThreadPolicy
from seqtag.serving.server import serve
from seqtag.serving.threads import ThreadSettings

__all__ = ["serve_checkpoint"]


def serve_checkpoint(trainer: pl.Trainer, ckpt_path: str, options: dict[str, Any]) -> None:
    """Serve ``ckpt_path`` on the trainer's device with the command line's ``options``."""
    if isinstance(trainer.accelerator, CUDAAccelerator):
        accelerator, devices = "cuda", list(trainer.device_ids)
    elif isinstance(trainer.accelerator, MPSAccelerator):
        accelerator, devices = "mps", list(trainer.device_ids)
    else:
        accelerator, devices = "cpu", 1
    policy = next((c for c in trainer.callbacks if isinstance(c, ThreadPolicy)), None)
    threads = ThreadSettings(
        adapt=policy is not None
        and policy.enabled
        # a deterministic run's results must not depend on the machine's load
        and not torch.are_deterministic_algorithms_enabled(),
        interval_s=policy.interval_s if policy is not None else ThreadSettings.interval_s,
    )
    serve(ckpt_path, accelerator=accelerator, devices=devices, threads=threads, **options)
