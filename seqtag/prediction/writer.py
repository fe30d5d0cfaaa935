"""Callbacks: writing predictions in input order, also when several processes predict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import ConfigError, SeqtagError
from seqtag.options import PositiveInt, Probability, check_ranges
from seqtag.prediction.formats import format_conll, format_jsonl
from seqtag.prediction.inference import (
    NO_SPANS_FOR_MIN_CONFIDENCE,
    PredictionOptions,
    in_input_order,
)
from seqtag.prediction.output import OutputSink
from seqtag.prediction.progress import (
    WRITER_OPTIONS,
    check_prediction_files,
    checkpoint_file,
    digest,
    output_file,
    refuse_on_every_process,
    run_fingerprint,
)
from seqtag.prediction.uncertain import SIDECAR_FORMATS, UncertainOutput, uncertain_sidecar_path

__all__ = [
    "PredictionWriter",
    "format_conll",  # re-exported: they lived here first
    "format_jsonl",
]


class PredictionWriter(BasePredictionWriter):
    """Writes ``seqtag predict`` output as it is produced, in input order, crash-safe.

    Predictions arrive chunk by chunk (see :mod:`seqtag.data.streaming`); each finished chunk
    is sorted back into input order and appended to this process's part of the output, so
    memory holds one chunk, and a kill loses at most the chunk in progress. Several processes
    each write their own chunks; rank 0 joins the parts at the end without any process
    sending predictions to another (see :mod:`seqtag.prediction.output`).

    Nothing it writes may be a file it reads (the input, the checkpoint it predicts with) or
    another of its outputs (the output, the uncertain output, that one's sidecar): such a
    run is refused before tagging, whatever path (link, ``./``) names the file.

    Args:
        output: file to write; standard output when unset or ``-`` (one process only).
        confidences: add the probability (softmax) or posterior marginal (CRF) of each tag.
        format: ``conll`` (token, tag[, confidence] columns), ``jsonl`` (one object per
            sentence: tokens, tags[, confidences], for span tasks ``spans`` with their
            confidence, and a JSON Lines input's other fields), or ``auto``: ``jsonl`` for
            JSON Lines input, else ``conll``.
        resume: continue the output of an interrupted run of the same command after its last
            complete chunk; the result equals an uninterrupted run's byte for byte. Refused,
            in one line, when the input, the model, the options or the parts differ from what
            the interrupted run recorded (see :mod:`seqtag.prediction.progress`); the parts
            of a run with another number of processes are removed: it starts over.
        min_confidence: span tasks only: spans less likely than this are dropped (their
            tokens are tagged ``O``), so that what is written can be acted on unchecked.
        most_uncertain: also write the N sentences the model is least sure about (``1 -`` the
            probability of its predicted tag sequence) to ``uncertain_output``, for annotation
            (see :mod:`seqtag.prediction.uncertain`).
        uncertain_output: the file for ``most_uncertain``, in the input's format.
    """

    def __init__(
        self,
        output: str | None = None,
        confidences: bool = False,
        format: Literal["auto", "conll", "jsonl"] = "auto",
        resume: bool = False,
        min_confidence: Probability | None = None,
        most_uncertain: PositiveInt | None = None,
        uncertain_output: str | None = None,
    ) -> None:
        check_ranges("prediction", PredictionWriter.__init__, locals())
        if (most_uncertain is None) != (uncertain_output is None):
            raise ConfigError(
                "prediction.most_uncertain and prediction.uncertain_output go together: the "
                "number of sentences to pick and the file to write them to"
            )
        super().__init__(write_interval="batch")
        self.output = output
        self.confidences = confidences
        self.format = format
        self.resume = resume
        self.min_confidence = min_confidence
        self.most_uncertain = most_uncertain
        self.uncertain_output = uncertain_output
        self.sink: OutputSink | None = None
        self.uncertain: UncertainOutput | None = None
        self._chunk: tuple[int, int] | None = None  # (chunk, chunk size) being collected
        self._pending: list[dict[str, Any]] = []
        self._input_format: str | None = None
        self._data: dict[str, Any] = {}  # the DataModule's hyper-parameters
        self._trainer = self._module = None
        self._started = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        # Before any tagging: a bad output path fails at once. Nothing is written yet: the
        # model is not loaded, and a resumed run's record is checked against it (_start).
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, TaggingDataModule):
            data = dict(datamodule.hparams)  # the input's name, format and reading options
            datamodule.resume_prediction(lambda: self.chunks_done)
        elif self.resume:
            raise ConfigError(
                "prediction.resume skips what an interrupted run wrote, which needs the input "
                f"read by seqtag's TaggingDataModule, not {type(datamodule).__name__}"
            )
        else:
            data = {}
        self._data = data
        self._input_format = data.get("predict_format") or data.get("format")
        self._trainer, self._module, self._started = trainer, pl_module, False
        rank, world_size = trainer.global_rank, trainer.world_size
        self._check_files(checkpoint_file(trainer))
        if self.uncertain_output is not None:
            self.uncertain = UncertainOutput(
                self.uncertain_output,
                self.most_uncertain,
                self._input_format,
                data.get("tag_field") or "upos",
                rank,
                world_size,
            )
        self.sink = OutputSink(output_file(self.output), rank, world_size, self.resume)

    def _check_files(self, checkpoint: str | None) -> None:
        """No output over an input (the predict file, the checkpoint) or over another output."""
        sidecar = None
        if self.uncertain_output and self._input_format in (None, *SIDECAR_FORMATS):
            sidecar = uncertain_sidecar_path(self.uncertain_output)
        outputs = (output_file(self.output), self.uncertain_output, sidecar)
        check_prediction_files(*outputs, self._data.get("predict_path"), checkpoint)

    def _start(self) -> None:
        """Once the model is loaded, before the first chunk is read (Lightning restores the
        checkpoint after ``setup`` and reads the first batch before any prediction hook, so
        this runs when the input's reader first asks for :attr:`chunks_done`): check the
        outputs against the checkpoint, and a resumed run's record against this run's
        fingerprint (a refusal on any process is one on all); then open this process's part.
        """
        if self._started or self.sink is None:
            return
        self._started = True
        trainer, keep, failure = self._trainer, None, None
        try:
            checkpoint = checkpoint_file(trainer)
            self._check_files(checkpoint)
            if self.sink.output is not None:
                options = {name: getattr(self, name) for name in WRITER_OPTIONS}
                self.sink.start(run_fingerprint(options, self._data, checkpoint, self._module))
                restored = self.sink.restored
                if self.uncertain is not None and restored is not None:
                    progress = self.sink.progress(self.sink.rank)
                    keep = self.uncertain.restore(restored.uncertain, restored.chunk_size, progress)
                if self.uncertain is not None and self.resume and trainer.global_rank == 0:
                    self.uncertain.remove_stale_states()
        except SeqtagError as err:
            failure = err
        refuse_on_every_process(trainer, failure)
        self.sink.open(keep)

    @property
    def chunks_done(self) -> int:
        """This process's chunks already in the output (a resumed run skips them); asked
        first by the input's reader, once the model is loaded: that starts it (:meth:`_start`)."""
        if self.sink is None:
            return 0
        self._start()
        return self.sink.chunks_done

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start()  # already done unless the input's reader never asked for chunks_done
        self._chunk, self._pending = None, []
        vocabularies = getattr(pl_module, "vocabularies", None)
        if self.min_confidence is not None and vocabularies and not vocabularies.corpus_scheme:
            raise ConfigError(NO_SPANS_FOR_MIN_CONFIDENCE)
        tunable = isinstance(getattr(pl_module, "prediction_options", None), PredictionOptions)
        if self.uncertain is not None and not tunable:
            raise ConfigError(
                f"prediction.most_uncertain needs a model that says how sure it is of each "
                f"sentence (seqtag.SequenceTagger), not {type(pl_module).__name__}"
            )
        if tunable:
            pl_module.prediction_options = PredictionOptions(
                confidences=self.confidences,
                # Span confidences cost a pass per span with a CRF: computed where written.
                spans=self.format == "jsonl"
                or (self.format == "auto" and self._input_format in (None, "jsonl")),
                min_confidence=self.min_confidence,
                uncertainty=self.uncertain is not None,
            )

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
                extra, spans = sentence["extra"], sentence.get("spans")
                parts.append(format_jsonl(tokens, tags, confidences, extra, spans))
            else:
                parts.append(format_conll(tokens, tags, confidences))
            if self.uncertain is not None:
                self.uncertain.heap.add(_candidate(sentence))
        state = None
        if self.uncertain is not None and self.sink.output is not None:
            # Its digest goes into the chunk's record; the state is saved after the record
            # (a kill in between: the resumed run tags that chunk again).
            state = self.uncertain.state_text(self.sink.chunks_done + 1)
            self.sink.next_uncertain_digest = digest(state.encode())
        self.sink.write_chunk("".join(parts), self._chunk[1])
        if state is not None:
            self.uncertain.save_text(state)
        self._chunk, self._pending = None, []

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush()
        self.sink.close()
        if self.uncertain is not None and trainer.world_size > 1:
            self.uncertain.save(self.sink.chunks_done)
        trainer.strategy.barrier("seqtag-prediction-parts")
        if trainer.is_global_zero:
            if self.uncertain is not None:
                self.uncertain.write()  # before the output: its presence means all is done
            self.sink.join()
            if self.uncertain is not None:
                self.uncertain.cleanup()
        trainer.strategy.barrier("seqtag-prediction-joined")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """After a failure the parts stay, for resume, unless nothing was written to them
        (Lightning calls no ``teardown`` then)."""
        if self.sink is not None:
            self.sink.close()
            self.sink.discard_if_unstarted()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "predict" and self.sink is not None:
            self.sink.close()


def _candidate(sentence: dict[str, Any]) -> dict[str, Any]:
    """What :mod:`seqtag.prediction.uncertain` keeps of a sentence."""
    keys = ("index", "uncertainty", "tokens", "tags", "extra", "spans")
    return {key: sentence.get(key) for key in keys}
