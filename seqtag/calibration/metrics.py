"""Confidence calibration: temperature scaling and expected calibration error (ECE).

A tagger's confidences are only useful downstream (thresholds, active learning, abstaining)
if a confidence of 0.9 is right about 90% of the time. These pieces are model-independent:

* :func:`fit_temperature` finds the scalar ``T`` that minimises a dev-set negative
  log-likelihood given as a callable of ``T``, so softmax and CRF taggers share it.
* :func:`expected_calibration_error` and :func:`reliability_bins` score confidences against
  correctness with equal-width bins; :class:`CalibrationError` accumulates the same bins over
  batches and processes (its states are sums, so the result is exact under DDP).
* :func:`span_correctness` marks predicted spans right or wrong, for span-level calibration.

Bin convention: ``bins`` equal-width bins over [0, 1]; bin ``i`` covers
``(i / bins, (i + 1) / bins]`` and a confidence of exactly 0 goes to the first bin. An empty
input, or a metric that saw nothing, gives an ECE of NaN (undefined, like an empty mean) rather
than an error, so that an evaluation loop over an empty split does not crash.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from seqtag.metrics.summed import read_summed

__all__ = [
    "TEMPERATURE_RANGE",
    "CalibrationError",
    "ReliabilityBin",
    "cross_entropy_nll",
    "ece_from_bins",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "span_correctness",
]

TEMPERATURE_RANGE = (0.05, 20.0)
"""Bounds of a fitted temperature. Beyond them the dev set, not the model, drives the fit: a
dev set the model tags perfectly pushes ``T`` to 0 (ever sharper is ever better), one it gets
mostly wrong pushes ``T`` to infinity (uniform), and ``logits / T`` overflows near 0."""


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin: its range ``(lower, upper]``, how many predictions fell in it, and
    their mean confidence and accuracy (``None`` when the bin is empty, so JSON stays valid)."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` for JSON output."""
        return asdict(self)


def fit_temperature(
    nll: Callable[[Tensor], Tensor],
    initial: float = 1.0,
    *,
    max_iter: int = 100,
    bounds: tuple[float, float] = TEMPERATURE_RANGE,
    device: torch.device | str | None = None,
) -> float:
    """The temperature ``T`` in ``bounds`` minimising ``nll(T)``.

    ``nll`` gets a 0-dim float64 tensor ``T`` on ``device`` (default CPU, which works with CUDA
    logits too: a 0-dim tensor neither moves nor upcasts float32 logits) and returns the dev
    set's total or mean negative log-likelihood as a 0-dim tensor differentiable in ``T``.
    L-BFGS with a strong Wolfe line search works on ``log T`` so that ``T`` stays positive;
    ``T`` is clamped to ``bounds`` inside the objective (see :data:`TEMPERATURE_RANGE` for
    why). The best finite point seen is returned, so a ``nll`` that turns NaN or infinite
    somewhere cannot spoil the result. The same ``nll`` always gives the same ``T``.

    Raises:
        ValueError: ``initial`` or ``bounds`` are not positive and finite, or ``nll`` does not
            return a differentiable scalar, finite at the starting temperature.
    """
    low, high = bounds
    if not (0 < low <= high < math.inf):
        raise ValueError(f"temperature bounds must satisfy 0 < low <= high < inf, got {bounds}")
    if not (0 < initial < math.inf):
        raise ValueError(f"the initial temperature must be positive and finite, got {initial}")
    log_low, log_high = math.log(low), math.log(high)
    start = min(max(math.log(initial), log_low), log_high)
    log_t = torch.tensor(start, dtype=torch.float64, device=device, requires_grad=True)
    best = [math.inf, start]  # lowest finite loss seen and its log T
    optimizer = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nll(log_t.clamp(log_low, log_high).exp())
        if loss.numel() != 1:
            raise ValueError(f"nll must return a scalar, got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("nll(T) must be differentiable in T (it has no gradient)")
        value = float(loss.detach())
        if not math.isfinite(value):
            if best[0] == math.inf:
                raise ValueError(f"nll is {value} at the initial temperature {math.exp(start):g}")
            # Stop here: a NaN would poison the line search; ``best`` keeps the last good point.
            raise _NonFinite
        loss.backward()
        if value < best[0]:
            best[0], best[1] = value, float(log_t.detach())
        if log_t.grad is None or not torch.isfinite(log_t.grad).all():
            raise _NonFinite
        return loss.detach()

    with contextlib.suppress(_NonFinite):
        optimizer.step(closure)
    return min(max(math.exp(best[1]), low), high)


class _NonFinite(Exception):
    """The objective or its gradient left the finite numbers; ends the optimisation."""


def cross_entropy_nll(
    logits: Tensor, targets: Tensor, ignore_index: int = -100
) -> Callable[[Tensor], Tensor]:
    """``nll(T)`` for a softmax tagger: mean cross-entropy of ``logits / T`` (``[..., C]``)
    against ``targets`` (``[...]``), skipping ``ignore_index``; logits are detached so that
    fitting ``T`` never reaches the model's weights."""
    flat_logits = logits.detach().reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1)

    def nll(temperature: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(
            flat_logits / temperature, flat_targets, ignore_index=ignore_index
        )

    return nll


def _flat_inputs(confidences: Any, correct: Any) -> tuple[Tensor, Tensor]:
    """Validated float64 confidences in [0, 1] and 0/1 correctness, flattened."""
    # Python floats go straight to float64: via float32, 1/15 would cross its bin edge.
    if isinstance(confidences, Tensor):
        conf = confidences.detach().reshape(-1).to(torch.float64)
    else:
        conf = torch.as_tensor(confidences, dtype=torch.float64).reshape(-1)
    right = torch.as_tensor(correct).detach().reshape(-1)
    if conf.numel() != right.numel():
        raise ValueError(
            f"{conf.numel()} confidences but {right.numel()} correctness values; one each"
        )
    if right.dtype != torch.bool:
        if not ((right == 0) | (right == 1)).all():
            raise ValueError("correctness values must be booleans or 0/1")
        right = right != 0
    if not ((conf >= 0) & (conf <= 1)).all():  # also refuses NaN
        raise ValueError("confidences must lie in [0, 1] (and not be NaN)")
    return conf, right


def _bin_sums(conf: Tensor, right: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin count, sum of confidences (float64) and number correct."""
    inner = torch.arange(1, bins, dtype=torch.float64, device=conf.device) / bins
    index = torch.bucketize(conf, inner, right=False)  # x <= edge stays below it: (lo, hi]
    counts = torch.bincount(index, minlength=bins)
    conf_sums = torch.zeros(bins, dtype=torch.float64, device=conf.device)
    conf_sums.index_add_(0, index, conf)
    correct_sums = torch.bincount(index, weights=right.to(torch.float64), minlength=bins)
    return counts, conf_sums, correct_sums.round().to(torch.long)


def _bins_from_sums(
    counts: Tensor, conf_sums: Tensor, correct_sums: Tensor
) -> list[ReliabilityBin]:
    bins = counts.numel()
    out = []
    for i, (n, conf, right) in enumerate(
        zip(counts.tolist(), conf_sums.tolist(), correct_sums.tolist(), strict=True)
    ):
        out.append(
            ReliabilityBin(
                lower=i / bins,
                upper=(i + 1) / bins,
                count=int(n),
                confidence=conf / n if n else None,
                accuracy=right / n if n else None,
            )
        )
    return out


def _ece_from_sums(counts: Tensor, conf_sums: Tensor, correct_sums: Tensor) -> Tensor:
    # sum_b (n_b / N) |acc_b - conf_b| == sum_b |correct_b - confsum_b| / N
    total = counts.sum()
    gap = (correct_sums.to(torch.float64) - conf_sums).abs().sum()
    if int(total) == 0:
        return torch.tensor(math.nan, dtype=torch.float64, device=counts.device)
    return gap / total.to(torch.float64)


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")


def reliability_bins(confidences: Any, correct: Any, bins: int = 15) -> list[ReliabilityBin]:
    """Per-bin count, mean confidence and accuracy of ``confidences`` (in [0, 1]) against
    ``correct`` (bool or 0/1), tensors or sequences of one length; the data of a reliability
    diagram and of its JSON."""
    _check_bins(bins)
    return _bins_from_sums(*_bin_sums(*_flat_inputs(confidences, correct), bins))


def expected_calibration_error(confidences: Any, correct: Any, bins: int = 15) -> float:
    """ECE: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over equal-width bins; NaN for
    empty input. 0 means confidences match accuracy bin by bin."""
    _check_bins(bins)
    return float(_ece_from_sums(*_bin_sums(*_flat_inputs(confidences, correct), bins)))


def ece_from_bins(bins: Sequence[ReliabilityBin]) -> float:
    """ECE of already computed bins (e.g. read back from JSON); NaN when all are empty."""
    total = sum(b.count for b in bins)
    if total == 0:
        return math.nan
    return (
        sum(
            b.count * abs(b.accuracy - b.confidence)
            for b in bins
            if b.count and b.accuracy is not None and b.confidence is not None
        )
        / total
    )


class CalibrationError(Metric):
    """Streaming ECE: per-bin counts, confidence sums and correct counts, summed across
    processes, so the result equals :func:`expected_calibration_error` on all the data."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    counts: Tensor
    confidence_sums: Tensor
    correct_sums: Tensor

    def __init__(self, bins: int = 15, validate_args: bool = True, **kwargs: Any) -> None:
        """``validate_args=False`` skips the range checks, which wait for the device."""
        super().__init__(**kwargs)
        _check_bins(bins)
        self.bins = bins
        self.validate_args = validate_args
        self.add_state("counts", torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "confidence_sums", torch.zeros(bins, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("correct_sums", torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")
        self._computed_bins: list[ReliabilityBin] | None = None

    def update(self, confidences: Tensor, correct: Tensor) -> None:
        """Add predictions: flat ``confidences`` in [0, 1] and ``correct`` (bool or 0/1)."""
        if self.validate_args:
            conf, right = _flat_inputs(confidences, correct)
        else:
            conf = confidences.detach().reshape(-1).to(torch.float64).clamp(0, 1)
            right = correct.detach().reshape(-1) != 0
        counts, conf_sums, correct_sums = _bin_sums(conf, right, self.bins)
        self.counts += counts.to(self.counts.device)
        self.confidence_sums += conf_sums.to(self.confidence_sums.device)
        self.correct_sums += correct_sums.to(self.correct_sums.device)

    def compute(self) -> Tensor:
        """ECE as a float64 scalar; NaN when nothing was seen."""
        # Summed states are here: keep the bins so reliability_bins() needs no second sync.
        self._computed_bins = self._read_bins()
        return _ece_from_sums(self.counts, self.confidence_sums, self.correct_sums)

    def _read_bins(self) -> list[ReliabilityBin]:
        return _bins_from_sums(self.counts, self.confidence_sums, self.correct_sums)

    def reliability_bins(self) -> list[ReliabilityBin]:
        """The bins behind :meth:`compute`, summed across processes.

        Right after :meth:`compute` this is local; otherwise it synchronises the states, and
        then under DDP every process must call it.
        """
        return read_summed(self, self._computed_bins, self._read_bins)


def span_correctness(
    predicted_spans: Iterable[Hashable], gold_spans: Iterable[Hashable]
) -> list[bool]:
    """One flag per predicted span of a sentence, in order: whether the same span is gold.

    Spans are compared whole, so any hashable form works as long as both sides use it, e.g.
    ``(start, end, type)`` or the ``(type, start, end)`` of
    :func:`seqtag.data.schemes.get_spans`. A boundary or type error makes the span wrong.
    """
    gold = set(gold_spans)
    return [span in gold for span in predicted_spans]
