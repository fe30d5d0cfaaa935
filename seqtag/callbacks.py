"""Callbacks: writing predictions in input order, also when several processes predict."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as pl
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from seqtag.inference import in_input_order


def write_conll(
    stream: TextIO,
    tokens: Sequence[str],
    tags: Sequence[str],
    confidences: Sequence[float] | None = None,
) -> None:
    """One ``token<TAB>tag[<TAB>confidence]`` line per token and a blank line after."""
    if confidences is None:
        stream.writelines(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags, strict=True))
    else:
        stream.writelines(
            f"{token}\t{tag}\t{conf:.4f}\n"
            for token, tag, conf in zip(tokens, tags, confidences, strict=True)
        )
    stream.write("\n")


class PredictionWriter(BasePredictionWriter):
    """Writes ``seqtag predict`` output as CoNLL columns, sentences in input order.

    Every process keeps its own sentences; at the end they are gathered on rank 0, sorted by
    their position in the input and written once, so no sentence is lost or repeated.

    Args:
        output: file to write; standard output when unset.
        confidences: add a third column with the probability (softmax) or posterior marginal
            (CRF) of each predicted tag.
    """

    def __init__(self, output: str | None = None, confidences: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.confidences = confidences
        self._results: list[dict[str, Any]] = []

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._results = []
        if hasattr(pl_module, "predict_confidences"):
            pl_module.predict_confidences = self.confidences

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._results.extend(prediction)

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = self._results
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, results)
            results = [item for part in gathered for item in part]
        self._results = []
        if not trainer.is_global_zero:
            return
        sentences = trainer.datamodule.sentences("predict")
        results = in_input_order([results])
        if [r["index"] for r in results] != list(range(len(sentences))):
            raise RuntimeError(
                f"predicted {len(results)} sentences for {len(sentences)} input sentences"
            )
        with contextlib.ExitStack() as stack:
            stream = (
                stack.enter_context(open(self.output, "w", encoding="utf-8"))
                if self.output
                else sys.stdout
            )
            for sentence, result in zip(sentences, results, strict=True):
                write_conll(
                    stream,
                    sentence.tokens,
                    result["tags"],
                    result["confidences"] if self.confidences else None,
                )
            stream.flush()


class PredictionProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the prediction bar on stderr.

    ``seqtag predict`` writes the tags to standard output, so ``seqtag predict ... > out.conll``
    must capture tags only; the progress of a large file still shows on the terminal.
    """

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


class ConfusionMatrixPlot(Callback):
    """After ``seqtag test``, save a PNG confusion matrix of the most frequent gold tags.

    Add it with ``--trainer.callbacks+=seqtag.callbacks.ConfusionMatrixPlot``; it needs
    matplotlib (``pip install matplotlib``). Rows are gold tags, columns predictions, each row
    normalised to sum to 1, over the ``top_k`` most frequent gold tags (summed across
    processes). The image goes to the logger's directory, or ``output`` when given.

    Args:
        top_k: how many of the most frequent gold tags to show.
        output: path of the PNG; default ``<log dir>/confusion_matrix.png``.
    """

    def __init__(self, top_k: int = 15, output: str | None = None) -> None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from seqtag.errors import SeqtagError

            raise SeqtagError(
                "ConfusionMatrixPlot needs matplotlib: pip install matplotlib"
            ) from None
        self.top_k = top_k
        self.output = output
        self.path: Path | None = None

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = pl_module.test_confusion.compute().cpu()  # synced: every rank calls it
        pl_module.test_confusion.reset()
        if not trainer.is_global_zero:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tags = list(pl_module.vocabularies.tags)
        shown = counts.sum(dim=1).argsort(descending=True)[: self.top_k]
        shown = shown[counts.sum(dim=1)[shown] > 0]
        matrix = counts[shown][:, shown].double()
        matrix = matrix / counts[shown].sum(dim=1, keepdim=True).double()
        names = [tags[i] for i in shown.tolist()]
        size = 1.0 + 0.55 * len(names)
        figure, axes = plt.subplots(figsize=(size + 1.5, size))
        image = axes.imshow(matrix.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        axes.set_xticks(range(len(names)), names, rotation=90)
        axes.set_yticks(range(len(names)), names)
        axes.set_xlabel("predicted tag")
        axes.set_ylabel("gold tag")
        axes.set_title("test confusion (rows sum to 1 over all predictions)")
        for row in range(len(names)):
            for col in range(len(names)):
                value = float(matrix[row, col])
                if value >= 0.005:
                    colour = "white" if value > 0.5 else "black"
                    axes.text(
                        col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour
                    )
        figure.colorbar(image, ax=axes, fraction=0.046)
        figure.tight_layout()
        directory = trainer.log_dir or trainer.default_root_dir
        self.path = Path(self.output) if self.output else Path(directory) / "confusion_matrix.png"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.path, dpi=120)
        plt.close(figure)
