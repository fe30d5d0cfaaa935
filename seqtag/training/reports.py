"""Reports of a test run beside its metrics: the confusion matrix of the most frequent tags."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class ConfusionMatrixPlot(Callback):
    """After ``seqtag test``, save a PNG confusion matrix of the most frequent gold tags.

    Add it with ``--trainer.callbacks+=seqtag.prediction.writer.ConfusionMatrixPlot``; it needs
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
        # trainer.log_dir is a collective under DDP (rank 0 broadcasts it): every rank asks.
        directory = trainer.log_dir or trainer.default_root_dir
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
        self.path = Path(self.output) if self.output else Path(directory) / "confusion_matrix.png"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.path, dpi=120)
        plt.close(figure)
