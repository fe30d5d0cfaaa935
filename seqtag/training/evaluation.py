"""What :class:`~seqtag.training.module.SequenceTagger` measures in validation and test.

Kept out of the module so that it stays a thin system. Per stage: the loss (from partial gold
too: ``allowed`` when the batch has unknown tags), token accuracy, span F1 for span tasks, and
how many tokens (and, for span tasks, sentences) were skipped because their gold tag is
unknown. In test also the tag confusion and calibration: the expected calibration error (ECE,
15 equal-width bins, see :mod:`seqtag.calibration.metrics`) of token confidences and, for span
tasks,
of span confidences, with the model's temperature (``test_ece``, ``test_span_ece``) and
without it (``..._uncalibrated``, temperature 1).

Confidences scored:

- token: the probability of the predicted tag (softmax output, or with a CRF the posterior
  marginal of the Viterbi tag at that position); correct when it equals the gold tag in the
  training scheme. Tokens with an unknown gold tag are skipped; a gold tag unseen in training
  is always wrong.
- span: each chunk of the predicted (Viterbi) path, read in the training scheme, with the
  probability that the tags contain exactly that chunk (exact CRF marginal, or the softmax
  approximation of :func:`~seqtag.models.crf.spans.softmax_span_confidence`); correct when the
  gold (corpus-scheme) tags have a chunk of the same start, end and type. Converting between
  schemes keeps the chunks, so these are the chunks that span F1 scores. Sentences with an
  unknown gold tag are skipped, as span F1 skips them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchmetrics.classification import MulticlassConfusionMatrix

from seqtag.calibration.test_time import TestCalibration
from seqtag.metrics.span_f1 import SpanF1, TokenAccuracy, format_span_report
from seqtag.models.tagger import Tagger

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger

__all__ = [
    "build_metrics",
    "end_epoch",
    "evaluate_batch",
    "loss_tokens",
    "start_epoch",
]


def build_metrics(module: SequenceTagger) -> None:
    """Create the validation and test metrics for the module's vocabularies."""
    vocab = module.vocabularies
    for stage in ("val", "test"):
        setattr(module, f"{stage}_acc", TokenAccuracy())
        spans = SpanF1(list(vocab.tags), vocab.corpus_scheme) if vocab.corpus_scheme else None
        setattr(module, f"{stage}_spans", spans)
    # Tag-level confusion on the test set (training-scheme tags), for ConfusionMatrixPlot.
    module.test_confusion = MulticlassConfusionMatrix(num_classes=len(vocab.tags))
    module.test_calibration = TestCalibration(vocab.tags, vocab.tag_scheme, vocab.corpus_scheme)


def start_epoch(module: SequenceTagger, stage: str) -> None:
    """Give the stage's metrics the DataModule's missing-tag marker (a model restored from a
    checkpoint does not know which marker this data uses); reset the test-only states."""
    datamodule = getattr(module.trainer, "datamodule", None)
    if datamodule is not None and hasattr(datamodule, "missing_tag"):
        for name in ("acc", "spans"):
            metric = getattr(module, f"{stage}_{name}", None)
            if metric is not None:
                metric.missing_tag = datamodule.missing_tag
    if stage == "test":
        module.test_confusion.reset()  # counts of one test run only
        module.test_calibration.start(module.tagger)


def loss_tokens(tagger: Tagger, batch: dict[str, Any]) -> int:
    """How many tokens ``tagger.loss`` averages over for this batch (at least 1), so that the
    epoch's logged loss is the mean per token whatever the batching."""
    if tagger.crf is not None:
        scored = batch["mask"]
    elif batch.get("allowed") is not None:
        scored = batch["mask"] & ~batch["allowed"].all(dim=2)
    else:
        scored = batch["tags"] >= 0
    return max(int(scored.sum()), 1)


def evaluate_batch(module: SequenceTagger, batch: dict[str, Any], stage: str) -> None:
    """Loss and metrics of one validation or test batch."""
    tagger = module.tagger
    emissions = module(batch)
    size = len(batch["lengths"])
    loss = tagger.loss(emissions, batch["tags"], batch["mask"], allowed=batch.get("allowed"))
    module.log(f"{stage}_loss", loss, sync_dist=True, batch_size=loss_tokens(tagger, batch))
    predicted = tagger.predict(emissions, batch["mask"])
    accuracy = getattr(module, f"{stage}_acc")
    spans = getattr(module, f"{stage}_spans")
    if spans is None:
        accuracy.update(predicted, batch["tags"])
    else:
        # Span tasks: every score in the corpus's own scheme, as the gold file has it.
        corpus_tags = module.to_corpus_tags(predicted, batch["lengths"])
        accuracy.update_strings(corpus_tags, batch["gold"])
        spans.update_strings(corpus_tags, batch["gold"])
    module.log(f"{stage}_acc", accuracy, prog_bar=True, batch_size=size)
    if stage == "test":
        known = batch["tags"] >= 0
        module.test_confusion.update(predicted[known], batch["tags"][known])
        marker = accuracy.missing_tag
        module.test_calibration.update(tagger, emissions, batch, predicted, marker)


def end_epoch(module: SequenceTagger, stage: str) -> None:
    """Log span scores, skipped counts and (test) calibration; ``seqtag test`` prints them."""
    printing = stage == "test" and module.trainer.is_global_zero
    spans = getattr(module, f"{stage}_spans")
    skipped_sentences = 0
    if spans is not None:
        scores = spans.compute()  # counts summed across processes: the same on every rank
        for name in ("precision", "recall", "f1"):
            # sync_dist averages equal values (no change); without it Lightning warns under DDP.
            value = scores[name].float()
            module.log(f"{stage}_{name}", value, prog_bar=name == "f1", sync_dist=True)
        skipped_sentences = spans.skipped_total()
        module.log(f"{stage}_skipped_sentences", float(skipped_sentences), sync_dist=True)
        if printing:
            print(format_span_report(spans))
        spans.reset()
    skipped_tokens = getattr(module, f"{stage}_acc").skipped_total()  # every rank calls it
    module.log(f"{stage}_skipped_tokens", float(skipped_tokens), sync_dist=True)
    if printing and skipped_tokens:
        sentences = f" ({skipped_sentences} sentences left out of span F1)" if spans else ""
        print(f"skipped: {skipped_tokens} tokens with unknown gold tags, not scored{sentences}")
    if stage == "test":
        values = module.test_calibration.compute()
        for name, value in values.items():
            module.log(f"test_{name}", value, sync_dist=True)
        if printing:
            print(module.test_calibration.report(float(module.tagger.temperature)))
