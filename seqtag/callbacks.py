"""Callbacks: writing predictions in input order, also when several processes predict."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from seqtag.data.text_files import LINE_BREAK, describe_line_break
from seqtag.errors import ConfigError
from seqtag.inference import in_input_order
from seqtag.prediction_output import OutputSink


def format_conll(
    tokens: Sequence[str], tags: Sequence[str], confidences: Sequence[float] | None = None
) -> str:
    """One ``token<TAB>tag[<TAB>confidence]`` line per token and a blank line after.

    Raises:
        ConfigError: a token or tag holds a tab or a line break (``\\n``, U+2028 and the
            others of ``str.splitlines``), which would add a column or a line. The corpus
            readers refuse line breaks, so only a JSON Lines token with a tab gets here, and
            ``--prediction.format jsonl`` writes it.
    """
    if _UNWRITABLE.search("".join(tokens)) or _UNWRITABLE.search("".join(tags)):
        _refuse_unwritable(tokens, tags)
    if confidences is None:
        lines = [f"{token}\t{tag}\n" for token, tag in zip(tokens, tags, strict=True)]
    else:
        lines = [
            f"{token}\t{tag}\t{conf:.4f}\n"
            for token, tag, conf in zip(tokens, tags, confidences, strict=True)
        ]
    return "".join(lines) + "\n"


# A tab or any character that str.splitlines splits at: none fits in a CoNLL field.
_UNWRITABLE = re.compile("\t|" + LINE_BREAK.pattern)
# Line breaks that json.dumps(ensure_ascii=False) leaves raw: valid JSON, but they split lines
# for str.splitlines and for JavaScript before ES2019.
_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _refuse_unwritable(tokens: Sequence[str], tags: Sequence[str]) -> None:
    for what, texts in (("token", tokens), ("tag", tags)):
        for text in texts:
            found = _UNWRITABLE.search(text)
            if found:
                char = found.group()
                name = "a tab" if char == "\t" else describe_line_break(char)
                raise ConfigError(
                    f"cannot write the {what} {text!r} as CoNLL: it holds {name}; "
                    "use --prediction.format jsonl"
                )


def format_jsonl(
    tokens: Sequence[str],
    tags: Sequence[str],
    confidences: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """One JSON object per sentence: the input record's other fields, tokens, tags, and the
    confidences when given.

    Always exactly one line: ``json.dumps`` escapes ``\\n``, ``\\r`` and the other control
    characters, and U+0085, U+2028 and U+2029 (which it would leave raw) are escaped here too.
    """
    record = {**(extra or {}), "tokens": list(tokens), "tags": list(tags)}
    if confidences is not None:
        record["confidences"] = [round(float(c), 4) for c in confidences]
    line = json.dumps(record, ensure_ascii=False)
    if not line.isascii():
        line = line.translate(_JSON_LINE_BREAKS)
    return line + "\n"


class PredictionWriter(BasePredictionWriter):
    """Writes ``seqtag predict`` output as it is produced, in input order, crash-safe.

    Predictions arrive chunk by chunk (see :mod:`seqtag.data.streaming`); each finished chunk
    is sorted back into input order and appended to this process's part of the output, so
    memory holds one chunk, and a kill loses at most the chunk in progress. Several processes
    each write their own chunks; rank 0 joins the parts at the end without any process
    sending predictions to another (see :mod:`seqtag.prediction_output`).

    Args:
        output: file to write; standard output when unset (one process only).
        confidences: add the probability (softmax) or posterior marginal (CRF) of each tag.
        format: ``conll`` (token, tag[, confidence] columns), ``jsonl`` (one object per
            sentence: tokens, tags[, confidences] and a JSON Lines input's other fields), or
            ``auto``: ``jsonl`` for JSON Lines input, else ``conll``.
        resume: continue the output of an interrupted run of the same command after its last
            complete chunk; the result equals an uninterrupted run's byte for byte.
    """

    def __init__(
        self,
        output: str | None = None,
        confidences: bool = False,
        format: Literal["auto", "conll", "jsonl"] = "auto",
        resume: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.confidences = confidences
        self.format = format
        self.resume = resume
        self.sink: OutputSink | None = None
        self._chunk: tuple[int, int] | None = None  # (chunk, chunk size) being collected
        self._pending: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict":  # before any tagging: a bad output path fails at once
            rank, world_size = trainer.global_rank, trainer.world_size
            self.sink = OutputSink(self.output, rank, world_size, self.resume)

    @property
    def chunks_done(self) -> int:
        """This process's chunks already in the output (a resumed run skips them)."""
        return self.sink.chunks_done if self.sink is not None else 0

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._chunk, self._pending = None, []
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
        chunk = (batch["chunk"], batch["chunk_size"])
        if self._chunk is not None and chunk != self._chunk:
            self._flush()
        self._chunk = chunk
        for sentence, extra in zip(prediction, batch["extra"], strict=True):
            self._pending.append({**sentence, "extra": extra})

    def _flush(self) -> None:
        if self._chunk is None:
            return
        jsonl = self.format == "jsonl" or (
            self.format == "auto" and any(s["extra"] is not None for s in self._pending)
        )
        parts = []
        for sentence in in_input_order([self._pending]):
            confidences = sentence["confidences"] if self.confidences else None
            tokens, tags = sentence["tokens"], sentence["tags"]
            if jsonl:
                parts.append(format_jsonl(tokens, tags, confidences, sentence["extra"]))
            else:
                parts.append(format_conll(tokens, tags, confidences))
        self.sink.write_chunk("".join(parts), self._chunk[1])
        self._chunk, self._pending = None, []

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()
        self.sink.close()
        trainer.strategy.barrier("seqtag-prediction-parts")
        if trainer.is_global_zero:
            self.sink.join()
        trainer.strategy.barrier("seqtag-prediction-joined")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict" and self.sink is not None:
            self.sink.close()  # after a failure the parts stay, for resume


class PredictionProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the prediction bar on stderr, counting sentences and tokens.

    ``seqtag predict`` writes the tags to standard output, so ``seqtag predict ... > out.conll``
    must capture tags only; the progress of a large file still shows on the terminal, with
    how many sentences and tokens are tagged per second (the input is read lazily, so there is
    no total to count down from).
    """

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
