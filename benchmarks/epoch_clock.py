"""A callback that stamps the end of every training epoch with its dev and test accuracy.

``benchmarks/time_to_accuracy.py`` passes it to the ordinary ``seqtag fit`` command (with
``benchmarks/`` on ``PYTHONPATH``), so the run it times is the one a user starts::

    seqtag fit --config C \\
        '--trainer.callbacks+={"class_path": "epoch_clock.EpochClock",
                               "init_args": {"report": "/tmp/clock.json",
                                             "test_path": "test.conllu.gz"}}'

At the end of each epoch (after its validation and checkpoints) it records ``time.time()``
and ``val_acc``, then tags the test file with the model's own ``tag()`` (tags only, in eval
mode; ``tag()`` puts the module back in training mode) and scores it. The scoring is the
benchmark's work, not the user's: its seconds are summed in ``excluded_s`` and subtracted from
every later timestamp, so a stamp is the wall time the run would have reached without it.
``tag()`` draws no random numbers, so the training run is the same with or without the clock.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from seqtag.data.io.formats import read_conllu


class EpochClock(Callback):
    """Per-epoch wall-clock stamps (benchmark time subtracted), dev and test accuracy."""

    def __init__(self, report: str, test_path: str, tag_field: str = "upos") -> None:
        self.report_path = Path(report)
        self.test_path = test_path
        self.tag_field = tag_field
        self.excluded_s = 0.0
        self.report: dict[str, Any] = {"pid": os.getpid(), "epochs": []}
        self.test: list[Any] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        started = time.perf_counter()
        self.test = read_conllu(self.test_path, self.tag_field)  # type: ignore[arg-type]
        self.excluded_s += time.perf_counter() - started

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.report["train_start"] = time.time() - self.excluded_s

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        stamp = time.time() - self.excluded_s
        started = time.perf_counter()
        predicted = pl_module.tag(  # type: ignore[operator]
            [list(sentence.tokens) for sentence in self.test], confidences=False
        )
        correct = total = 0
        for sentence, tags in zip(self.test, predicted, strict=True):
            correct += sum(gold == guess for gold, guess in zip(sentence.tags, tags, strict=True))
            total += len(tags)
        val_acc = trainer.callback_metrics.get("val_acc")
        self.report["epochs"].append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "end": stamp,
                "val_acc": None if val_acc is None else float(val_acc),
                "test_acc": correct / total,
                "test_tokens": total,
            }
        )
        self.excluded_s += time.perf_counter() - started
        self._write()

    def _write(self) -> None:
        """Replace the report in one rename, so a reader never sees half of it."""
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.report_path.with_name(f".{self.report_path.name}.{os.getpid()}")
        partial.write_text(json.dumps(self.report), encoding="utf-8")
        os.replace(partial, self.report_path)
