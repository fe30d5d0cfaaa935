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

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from seqtag.calibration.metrics import CalibrationError, ReliabilityBin, span_correctness
from seqtag.data.batching import UNKNOWN_TARGET
from seqtag.data.schemes import get_spans
from seqtag.metrics.span_f1 import SpanF1, TokenAccuracy, format_span_report
from seqtag.models.crf.spans import SpanTags, span_confidence
from seqtag.models.tagger import Tagger

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger

__all__ = [
    "ECE_BINS",
    "TestCalibration",
    "build_metrics",
    "end_epoch",
    "evaluate_batch",
    "loss_tokens",
    "predicted_confidence",
    "start_epoch",
]

ECE_BINS = 15
"""Equal-width confidence bins of every ECE seqtag reports."""


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


class TestCalibration(nn.Module):
    """ECE of token (and span) confidences on the test set, with and without the temperature.

    Holds :class:`~seqtag.calibration.metrics.CalibrationError` metrics (sums, exact under DDP)
    named
    ``ece``, ``ece_uncalibrated`` and, for span tasks, ``span_ece`` and
    ``span_ece_uncalibrated``; after :meth:`compute`, :attr:`bins` has each one's reliability
    bins and :attr:`values` its ECE (for :class:`~seqtag.prediction.writer.ReliabilityDiagram`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, tags: Any, tag_scheme: str | None, corpus_scheme: str | None) -> None:
        super().__init__()
        names = ["ece", "ece_uncalibrated"]
        self.span_tags: SpanTags | None = None
        if corpus_scheme:
            names += ["span_ece", "span_ece_uncalibrated"]
            self.span_tags = SpanTags(list(tags), tag_scheme or corpus_scheme)
        self.tags = tags
        self.tag_scheme = tag_scheme or corpus_scheme
        self.corpus_scheme = corpus_scheme
        self.metrics = nn.ModuleDict(
            {name: CalibrationError(ECE_BINS, validate_args=False) for name in names}
        )
        self.bins: dict[str, list[ReliabilityBin]] = {}
        self.values: dict[str, float] = {}
        self._scaled = True

    def start(self, tagger: Tagger) -> None:
        """Reset; note whether the temperature differs from 1 (else one pass serves both)."""
        for metric in self.metrics.values():
            metric.reset()
        self.bins, self.values = {}, {}
        self._scaled = float(tagger.temperature) != 1.0

    @torch.no_grad()
    def update(
        self,
        tagger: Tagger,
        emissions: Tensor,
        batch: dict[str, Any],
        predicted: Tensor,
        missing_tag: str | None,
    ) -> None:
        """Add a test batch: ``predicted`` are the tags the metrics scored (Viterbi/argmax)."""
        mask = batch["mask"]
        tags = batch["tags"]
        scored = mask & (tags != UNKNOWN_TARGET)
        correct = (predicted == tags)[scored]
        temperatures = {"ece": tagger.temperature, "ece_uncalibrated": None}
        confidences: dict[str, Tensor] = {}
        for name, temperature in temperatures.items():
            if name == "ece_uncalibrated" and not self._scaled:
                confidences[name] = confidences["ece"]
                continue
            confidence = predicted_confidence(tagger, emissions, mask, predicted, temperature)
            confidences[name] = confidence[scored]
        for name, confidence in confidences.items():
            self.metrics[name].update(confidence, correct)
        if self.span_tags is not None:
            self._update_spans(tagger, emissions, batch, predicted, missing_tag)

    def _update_spans(
        self,
        tagger: Tagger,
        emissions: Tensor,
        batch: dict[str, Any],
        predicted: Tensor,
        missing_tag: str | None,
    ) -> None:
        rows: list[tuple[int, tuple[str, int, int]]] = []
        correct: list[bool] = []
        lengths = batch["lengths"].tolist()
        for row, (ids, length, gold) in enumerate(
            zip(predicted.tolist(), lengths, batch["gold"], strict=True)
        ):
            if missing_tag is not None and missing_tag in gold:
                continue  # as span F1: chunks next to an unknown tag have no known extent
            spans = get_spans(self.tags.decode(ids[:length]), self.tag_scheme)
            gold_spans = get_spans(list(gold), self.corpus_scheme)
            rows.extend((row, span) for span in spans)
            correct.extend(span_correctness(spans, gold_spans))
        if not rows:
            return
        encoded = self.span_tags.encode(rows, device=emissions.device)
        right = torch.tensor(correct, device=emissions.device)
        mask, span_tags = batch["mask"], self.span_tags
        scale = tagger.temperature
        confidence = span_confidence(tagger.crf, emissions, mask, encoded, span_tags, scale)
        self.metrics["span_ece"].update(confidence, right)
        if self._scaled:
            confidence = span_confidence(tagger.crf, emissions, mask, encoded, span_tags, None)
        self.metrics["span_ece_uncalibrated"].update(confidence, right)

    def compute(self) -> dict[str, Tensor]:
        """Each ECE (float32; NaN when nothing was scored), summed across processes: every
        process must call it. Fills :attr:`bins` and :attr:`values`."""
        out = {}
        for name, metric in self.metrics.items():
            value = metric.compute()
            self.bins[name] = metric.reliability_bins()
            self.values[name] = float(value)
            out[name] = value.float()
        return out

    def report(self, temperature: float) -> str:
        """The ECE lines of ``seqtag test``'s output."""

        def text(name: str) -> str:
            value = self.values.get(name, math.nan)
            return "n/a" if math.isnan(value) else f"{value:.4f}"

        lines = [
            f"calibration (ECE over {ECE_BINS} equal-width confidence bins; temperature "
            f"{temperature:.4g}):",
            f"  tokens: {text('ece')} (uncalibrated: {text('ece_uncalibrated')})",
        ]
        if "span_ece" in self.values:
            lines.append(
                f"  spans:  {text('span_ece')} (uncalibrated: {text('span_ece_uncalibrated')})"
            )
        return "\n".join(lines)


def predicted_confidence(
    tagger: Tagger,
    emissions: Tensor,
    mask: Tensor,
    predicted: Tensor,
    temperature: Tensor | float | None,
) -> Tensor:
    """Probability of each predicted tag [B, L] with the scores divided by ``temperature``
    (``None``: unscaled): the softmax output, or with a CRF the tag's posterior marginal."""
    if tagger.crf is not None:
        probabilities = tagger.crf.marginals(emissions, mask, temperature=temperature)
    else:
        scores = emissions.float()
        if temperature is not None:
            scores = scores / temperature
        probabilities = scores.softmax(dim=-1)
    return probabilities.gather(-1, predicted.unsqueeze(-1)).squeeze(-1)
