"""SequenceTagger: the LightningModule around :class:`seqtag.models.tagger.Tagger`.

A thin system: losses, metrics, optimizers, decoding ids back to strings. How its network comes
to be (from a :class:`~seqtag.data.spec.DataSpec`: ``SequenceTagger(spec=datamodule.spec)``, the
trainer's DataModule when a ``fit`` takes the model, a checkpoint or a state dict) and how it is
saved is :class:`~seqtag.training.lifecycle.NetworkLifecycle`, its base class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, overload

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from seqtag.checkpoint.io import CHECKPOINT_KEY
from seqtag.data.io.inputs import as_token_lists
from seqtag.data.schemes import convert_tags
from seqtag.data.spec import DataSpec
from seqtag.data.streaming import DEFAULT_CHUNK_SIZE
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CheckpointError, ConfigError
from seqtag.models.encoder import RNNType
from seqtag.models.tagger import Decoder, Tagger
from seqtag.options import (
    DecayFactor,
    DropoutRate,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    check_ranges,
)
from seqtag.prediction.inference import (
    PredictionOptions,
    predict_batch,
    tag_sentences,
    tag_stream,
)
from seqtag.runtime.threads import configure_threads
from seqtag.training.evaluation import end_epoch, evaluate_batch, start_epoch
from seqtag.training.lifecycle import NOT_BUILT, NetworkLifecycle
from seqtag.training.network import placeholder_network
from seqtag.training.optimization import (
    DEFAULT_LR_DECAY,
    attached_trainer,
    make_optimization,
)

__all__ = ["CHECKPOINT_KEY", "SequenceTagger"]


class SequenceTagger(NetworkLifecycle):
    """A BiRNN tagger with a softmax or CRF output, trained and evaluated by Lightning.

    Args:
        spec: what the data says the network needs (``TaggingDataModule.spec``), to build the
            network now; leave unset when the trainer's DataModule will provide it, or to load
            a checkpoint or a state dict.
        rnn_type: ``lstm``, ``gru`` or ``rnn``.
        hidden_size: RNN units per direction (>= 1).
        num_layers: stacked BiRNN layers (>= 1).
        dropout: dropout on embeddings, between layers and before the output layer (in
            [0, 1)).
        word_dropout: probability of replacing any training word by the unknown word (in
            [0, 1]).
        rare_word_dropout: ``alpha`` of the frequency-aware replacement: a training word seen
            ``c`` times becomes unknown with probability ``alpha / (alpha + c)``, which
            teaches the unknown word to behave like the rare words that unseen words resemble
            (>= 0; 0 turns it off).
        embedding_dim: word embedding width (>= 1); leave unset to take the width of the
            pretrained vectors (100 without vectors). A value that contradicts the vectors is
            an error.
        freeze_embeddings: keep pretrained word vectors fixed instead of fine-tuning them.
        char_features: ``none``, ``cnn`` (Ma and Hovy 2016) or ``lstm`` (Lample et al. 2016).
        char_dim: character embedding width (>= 1).
        char_hidden_size: filters of the character CNN, or units per direction of the
            character BiLSTM (>= 1).
        decoder: ``softmax`` or ``crf``.
        constrained_decoding: with a CRF on a span task, forbid transitions that the tag
            scheme does not allow (such as ``O -> I-PER`` in BIO).
        lr: learning rate (> 0); unset, the optimizer's own (0.002 for the default Adam). Set
            it, or let ``Tuner.lr_find`` set it, to override the rate of any optimizer.
        lr_decay: the default schedule multiplies the learning rate by this after every
            epoch (in (0, 1]; 1.0 keeps it constant); ignored when ``lr_scheduler`` is given.
        optimizer: makes the optimizer from the parameters; default Adam (fused), the
            recipe behind the README's results.
        lr_scheduler: makes the scheduler from the optimizer (stepped every epoch); default
            exponential decay by ``lr_decay``.
    """

    def __init__(
        self,
        spec: DataSpec | None = None,
        rnn_type: RNNType = "lstm",
        hidden_size: PositiveInt = 256,
        num_layers: PositiveInt = 1,
        dropout: DropoutRate = 0.5,
        word_dropout: Probability = 0.0,
        rare_word_dropout: NonNegativeFloat = 0.25,
        embedding_dim: PositiveInt | None = None,
        freeze_embeddings: bool = False,
        char_features: Literal["none", "cnn", "lstm"] = "none",
        char_dim: PositiveInt = 30,
        char_hidden_size: PositiveInt = 50,
        decoder: Decoder = "softmax",
        constrained_decoding: bool = True,
        lr: PositiveFloat | None = None,
        lr_decay: DecayFactor = DEFAULT_LR_DECAY,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        check_ranges("model", SequenceTagger.__init__, locals())
        super().__init__()
        self.save_hyperparameters(ignore=["spec", "optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.vocabularies: Vocabularies | None = None
        # Parameters exist from here on (uninitialised until the vocabularies are known);
        # building them must not draw from the seeded generator that the real network uses.
        with torch.random.fork_rng(devices=[]):
            self.tagger: Tagger = placeholder_network(self.hparams, embedding_dim)
        #: What predict_step computes beyond the tags (the prediction writer sets it to what
        #: it writes).
        self.prediction_options = PredictionOptions()
        if spec is not None:
            self.build(spec)

    def setup(self, stage: str) -> None:
        configure_threads(self.trainer)  # DDP on the CPU: each process its share of cores

    def _require_tagger(self) -> Tagger:
        if self.vocabularies is None:
            raise CheckpointError(NOT_BUILT)
        return self.tagger

    # -- steps ----------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Tag scores [B, T, num_tags] for a collated batch."""
        return self._require_tagger()(batch["words"], batch["lengths"], batch.get("chars"))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # ``allowed`` comes with batches holding unknown gold tags (partial annotation).
        loss = self.tagger.loss(self(batch), batch["tags"], batch["mask"], batch.get("allowed"))
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["lengths"]))
        return loss

    def to_corpus_tags(self, ids: Tensor, lengths: Tensor) -> list[list[str]]:
        """Tag ids [B, T] as tag strings in the corpus's scheme, cut to each sentence's length."""
        vocab = self.vocabularies
        rows = ids.tolist()
        tags = [vocab.tags.decode(row[:n]) for row, n in zip(rows, lengths.tolist(), strict=True)]
        if vocab.corpus_scheme and vocab.tag_scheme != vocab.corpus_scheme:
            tags = [convert_tags(t, vocab.tag_scheme, vocab.corpus_scheme) for t in tags]
        return tags

    # Evaluation (losses, metrics, skipped counts, test calibration): seqtag.training.evaluation.
    def on_validation_epoch_start(self) -> None:
        start_epoch(self, "val")

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int | None = None
    ) -> None:
        """Several dataloaders are scored apart: ``val_acc/dataloader_idx_1`` and so on."""
        evaluate_batch(self, batch, "val", batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        end_epoch(self, "val")

    def on_test_epoch_start(self) -> None:
        start_epoch(self, "test")

    def test_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int | None = None
    ) -> None:
        evaluate_batch(self, batch, "test", batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        end_epoch(self, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per sentence, in batch (length) order: ``index``, ``tokens``, ``tags`` (corpus scheme),
        and ``confidences``, ``spans``, ``uncertainty`` as :attr:`prediction_options` asks (see
        :func:`seqtag.prediction.inference.predict_batch`; :func:`seqtag.in_input_order` sorts)."""
        return predict_batch(
            self,
            batch,
            self.prediction_options.confidences,
            spans=self.prediction_options.spans,
            min_confidence=self.prediction_options.min_confidence,
            uncertainty=self.prediction_options.uncertainty,
        )

    def configure_optimizers(self) -> Any:
        """The optimizer and per-epoch scheduler of the hyper-parameters (see the class doc)."""
        return make_optimization(
            self.parameters(),
            lr=self.hparams.lr,
            lr_decay=self.hparams.lr_decay,
            optimizer=self.optimizer_factory,
            lr_scheduler=self.scheduler_factory,
            trainer=attached_trainer(self),
        )

    # -- Python API -----------------------------------------------------------------------
    @overload
    def tag(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = ...,
        spans: Literal[False] = ...,
        *,
        confidences: Literal[True] = ...,
    ) -> list[list[tuple[str, float]]]: ...
    @overload
    def tag(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = ...,
        spans: Literal[False] = ...,
        *,
        confidences: Literal[False],
    ) -> list[list[str]]: ...
    @overload
    def tag(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = ...,
        *,
        spans: Literal[True],
        confidences: bool = ...,
    ) -> list[dict[str, Any]]: ...
    @overload
    def tag(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = ...,
        spans: bool = ...,
        *,
        confidences: bool = ...,
    ) -> list[list[tuple[str, float]]] | list[list[str]] | list[dict[str, Any]]: ...
    @torch.inference_mode()
    def tag(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = 256,
        spans: bool = False,
        *,
        confidences: bool = True,
    ) -> list[list[tuple[str, float]]] | list[list[str]] | list[dict[str, Any]]:
        """Tag sentences; returns ``(tag, confidence)`` per token, sentences in input order.

        ``sentences`` is a list of token lists, or a list of sentence strings that are split
        on whitespace. A bare string or one sentence's flat token list is refused (it would
        tag every character or every word as a sentence of its own). Works without a Trainer
        or a DataModule: the checkpoint's vocabularies encode the text. Runs on whatever
        device the module is on, in batches of ``batch_size``.

        With ``spans=True``, each sentence is instead the dict ``trainer.predict`` gives
        (``index``, ``tokens``, ``tags``, ``confidences``, ``spans``; see
        :func:`seqtag.prediction.raw.predict_sentences`): ``spans`` lists the chunks of a span
        model, and is ``None`` for a model without a tag scheme (POS tags), as in prediction.

        ``confidences=False`` pays for the tags only (a CRF's best path, without the
        forward-backward pass its confidences need): each sentence is its list of tags, and
        with ``spans=True`` the dict's ``confidences`` is ``None`` and its spans are
        ``{"start", "end", "type"}``, without the ``confidence`` that costs a CRF two forward
        passes per span. The tags and spans are the same either way.
        """
        from seqtag.prediction.raw import predict_sentences  # the import block is shared

        _check_switches(spans=spans, confidences=confidences)
        self._require_tagger()
        if spans:
            return predict_sentences(self, as_token_lists(sentences), batch_size, confidences)
        return tag_sentences(self, as_token_lists(sentences), batch_size, confidences)

    def tag_stream(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int = 256,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        spans: bool = False,
        *,
        confidences: bool = True,
    ) -> Iterator[list[tuple[str, float]]] | Iterator[list[str]] | Iterator[dict[str, Any]]:
        """:meth:`tag` for inputs of any length: yields each sentence's result in input order
        (with ``spans=True``, :meth:`tag`'s dicts, ``index`` counting over the whole input;
        ``confidences=False`` as in :meth:`tag`).

        Reads ``chunk_size`` sentences at a time (a generator, a file being read...), so memory
        stays bounded by the chunk, not by the input. Bad switches are refused at the call,
        not at the first sentence.
        """
        _check_switches(spans=spans, confidences=confidences)
        self._require_tagger()
        return self._tag_stream(sentences, batch_size, chunk_size, spans, confidences)

    def _tag_stream(
        self,
        sentences: Iterable[Iterable[str]] | Iterable[str],
        batch_size: int,
        chunk_size: int,
        spans: bool,
        confidences: bool,
    ) -> Iterator[Any]:
        from seqtag.prediction.raw import predict_stream  # the import block is shared

        with torch.inference_mode():
            if spans:
                yield from predict_stream(self, sentences, batch_size, chunk_size, confidences)
            else:
                yield from tag_stream(self, sentences, batch_size, chunk_size, confidences)

    # -- Lightning's export methods -------------------------------------------------------
    def to_onnx(self, file_path: Any = None, input_sample: Any = None, **kwargs: Any) -> None:
        """Refused, naming the way that works: a tagger exports as a graph from word ids to
        tags that decodes inside (the CRF's Viterbi loop) plus the vocabulary that turns text
        into ids, which ``seqtag export`` and :func:`seqtag.integrations.export.export_model`
        write; Lightning's export of the whole module fails deep inside torch."""
        raise ConfigError(_export_instead("to_onnx", "onnx"))

    def to_torchscript(
        self,
        file_path: Any = None,
        method: str | None = "script",
        example_inputs: Any = None,
        **kwargs: Any,
    ) -> None:
        """Refused like :meth:`to_onnx`, naming ``seqtag export --format torchscript``."""
        raise ConfigError(_export_instead("to_torchscript", "torchscript"))


def _check_switches(**switches: Any) -> None:
    """``tag()``'s on/off options are booleans: a string such as ``"false"`` would count as
    true and silently compute (or leave out) what was not asked."""
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise ConfigError(f"tag(): {name} must be True or False, got {value!r}")


def _export_instead(method: str, format: str) -> str:
    return (
        f"model.{method}() cannot export a seqtag tagger: use seqtag export --ckpt_path CKPT "
        f"--format {format} --output FILE (CKPT from trainer.save_checkpoint), or in Python "
        f"seqtag.integrations.export.export_model(model, {format!r}, FILE); both write the "
        "model and the vocabulary it needs (FILE.vocab.json)"
    )
