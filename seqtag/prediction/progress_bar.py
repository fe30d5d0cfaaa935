"""The progress bar of ``seqtag predict``: on standard error, counting sentences and tokens."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class PredictionProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the prediction bar on stderr, counting sentences and tokens.

    ``seqtag predict`` writes the tags to standard output, so ``seqtag predict ... > out.conll``
    must capture tags only; the progress of a large file still shows on the terminal, with
    how many sentences and tokens are tagged per second (the input is read lazily, so there is
    no total to count down from).
    """

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Close the bars, so that the one-line error starts a line of its own."""
        for name in ("train", "val", "test", "predict"):
            try:
                bar = getattr(self, f"{name}_progress_bar")
            except TypeError:  # that bar was never opened
                continue
            bar.close()

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._tagged = [0, 0]  # sentences, tokens
        self._started = time.perf_counter()

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if not isinstance(batch, dict) or self.is_disabled:
            return
        self._tagged[0] += len(batch["index"])
        self._tagged[1] += int(batch["lengths"].sum()) if "lengths" in batch else 0
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        sentences, tokens = self._tagged
        self.predict_progress_bar.set_postfix_str(
            f"{sentences:,} sentences, {tokens:,} tokens, {tokens / elapsed:,.0f} tokens/s",
            refresh=False,
        )

    def init_predict_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.predict_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )
