"""A callback that reports when a ``seqtag fit`` run starts training and how fast it trains.

``benchmarks/training_scale.py`` passes it to the ``seqtag`` command (with ``benchmarks/`` on
``PYTHONPATH``), so the run it measures is the ordinary command, not a copy of its code::

    seqtag fit --config C \\
        '--trainer.callbacks+={"class_path": "training_probe.TrainingProbe",
                               "init_args": {"folder": "/tmp/probe"}}'

Every process (each DDP rank) writes ``folder/rank-R.json``: once at the start of its first
training batch, so that start-up is known even if the run dies later, and again when training
ends. Times are ``time.time()`` (the wall clock the launcher also reads, so the two can be
subtracted across processes); tokens are ``batch["mask"].sum()``, the real tokens of a batch
without padding. The file also holds the process's peak resident memory (``VmHWM``) at the end
of training and its torch thread count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback


def peak_rss_kib() -> int | None:
    """This process's peak resident memory so far (``VmHWM`` in ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class TrainingProbe(Callback):
    """Timestamps of the first and last training batches, and the tokens trained on.

    ``first_batch_start`` minus the launcher's start time is the start-up (imports, reading,
    counting and encoding the corpus, building the model). The rate leaves the first step out
    (its own warm-up: allocator, oneDNN kernels): tokens of batches 1..N-1 over the time from
    the end of batch 0 to the end of the last batch.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.report: dict[str, Any] = {"pid": os.getpid()}

    def _write(self) -> None:
        """Replace the rank's file in one rename, so a reader never sees half of it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"rank-{self.report['rank']}.json"
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        partial.write_text(json.dumps(self.report), encoding="utf-8")
        os.replace(partial, target)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if "first_batch_start" in self.report:
            return
        self.report.update(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            first_batch_start=time.time(),
            torch_threads=torch.get_num_threads(),
            peak_rss_kib_at_first_batch=peak_rss_kib(),
            steps=0,
            tokens=0,
        )
        self._write()

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.time()
        tokens = int(batch["mask"].sum())
        report = self.report
        if report["steps"] == 0:
            report["first_batch_end"] = now
            report["first_batch_tokens"] = tokens
        report["steps"] += 1
        report["tokens"] += tokens
        report["last_batch_end"] = now

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "first_batch_start" not in self.report:
            return
        self.report.update(
            train_end=time.time(),
            peak_rss_kib=peak_rss_kib(),
            torch_threads_at_end=torch.get_num_threads(),
        )
        self._write()
