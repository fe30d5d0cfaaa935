"""Calibration measured at test time: ECE of token and span confidences, with and without the
temperature, and the probability of each predicted tag that it is based on.

Used by the training system's test step and by the dev-set temperature fit alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from seqtag.calibration.metrics import CalibrationError, ReliabilityBin, span_correctness
from seqtag.data.batching import UNKNOWN_TARGET
from seqtag.data.schemes import get_spans
from seqtag.models.crf.spans import SpanTags, span_confidence
from seqtag.models.tagger import Tagger

ECE_BINS = 15
"""Equal-width confidence bins of every ECE seqtag reports."""


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
            self._update_spans(tagger, emissions, batch, predicted)

    def _update_spans(
        self,
        tagger: Tagger,
        emissions: Tensor,
        batch: dict[str, Any],
        predicted: Tensor,
    ) -> None:
        rows: list[tuple[int, tuple[str, int, int]]] = []
        correct: list[bool] = []
        lengths = batch["lengths"].tolist()
        for row, (ids, length, gold) in enumerate(
            zip(predicted.tolist(), lengths, batch["gold"], strict=True)
        ):
            if None in gold:  # an unknown gold tag (see seqtag.data.partial.gold_strings)
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
