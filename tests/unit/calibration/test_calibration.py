"""Temperature fitting on problems with a known answer; ECE bins by hand and streamed."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from seqtag.calibration.metrics import (
    TEMPERATURE_RANGE,
    CalibrationError,
    ReliabilityBin,
    cross_entropy_nll,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    span_correctness,
)
from seqtag.errors import OutputError, SeqtagError


def sampled_problem(scale: float, n: int = 20000, classes: int = 5, seed: int = 0):
    """Logits ``scale`` times too sharp for labels drawn from softmax(true logits)."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=generator).squeeze(1)
    return true_logits * scale, labels


@pytest.mark.parametrize(("scale", "expected"), [(3.0, 3.0), (1.0, 1.0), (0.5, 0.5)])
def test_fit_temperature_recovers_the_known_scale(scale, expected):
    logits, labels = sampled_problem(scale)
    fitted = fit_temperature(cross_entropy_nll(logits, labels))
    assert isinstance(fitted, float)
    assert fitted == pytest.approx(expected, rel=0.05)


def test_fit_temperature_is_deterministic_and_accepts_a_sum():
    logits, labels = sampled_problem(3.0, n=3000)

    def total(temperature):
        return torch.nn.functional.cross_entropy(logits / temperature, labels, reduction="sum")

    first = fit_temperature(total, initial=0.7)
    assert fit_temperature(total, initial=0.7) == first
    assert fit_temperature(cross_entropy_nll(logits, labels)) == pytest.approx(first, rel=1e-3)


def test_fit_temperature_skips_padding():
    logits, labels = sampled_problem(2.0, n=4000)
    padded = torch.cat([logits, torch.full((500, 5), 50.0)]).reshape(-1, 9, 5)
    targets = torch.cat([labels, torch.full((500,), -100)]).reshape(-1, 9)
    assert fit_temperature(cross_entropy_nll(padded, targets)) == pytest.approx(
        fit_temperature(cross_entropy_nll(logits, labels)), rel=1e-4
    )


def test_fit_temperature_clamps_a_degenerate_dev_set():
    logits, _ = sampled_problem(1.0, n=500)
    always_right = logits.argmax(-1)  # NLL falls forever as T -> 0
    assert fit_temperature(cross_entropy_nll(logits, always_right)) == TEMPERATURE_RANGE[0]
    always_wrong = logits.argmin(-1)  # NLL falls forever as T -> infinity
    assert fit_temperature(cross_entropy_nll(logits, always_wrong)) == TEMPERATURE_RANGE[1]
    assert fit_temperature(cross_entropy_nll(logits, always_right), bounds=(0.5, 2.0)) == 0.5


def test_fit_temperature_survives_a_non_finite_region():
    logits, labels = sampled_problem(3.0, n=3000)
    nll = cross_entropy_nll(logits, labels)

    def fragile(temperature):
        loss = nll(temperature)
        return torch.where(temperature > 2.5, loss, loss * math.nan)

    fitted = fit_temperature(fragile, initial=4.0)
    assert math.isfinite(fitted)
    assert fitted > 2.5
    assert fragile(torch.tensor(fitted, dtype=torch.float64)) <= nll(torch.tensor(4.0))


def test_fit_temperature_refuses_bad_input():
    logits, labels = sampled_problem(1.0, n=100)
    nll = cross_entropy_nll(logits, labels)
    with pytest.raises(ValueError, match="initial"):
        fit_temperature(lambda t: nll(t) * math.inf)
    with pytest.raises(ValueError, match="positive"):
        fit_temperature(nll, initial=0.0)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(nll, bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="scalar"):
        fit_temperature(lambda t: (logits / t).sum(-1))
    with pytest.raises(ValueError, match="differentiable"):
        fit_temperature(lambda t: torch.tensor(1.0))


def test_bins_follow_the_half_open_convention():
    # 0 -> first bin; 1/15 is the first bin's upper edge; 1 -> last bin.
    confidences = [0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 1.0]
    correct = [False, True, True, False, True]
    bins = reliability_bins(confidences, correct)
    assert len(bins) == 15
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert bins[0] == ReliabilityBin(0.0, 1 / 15, 2, (1 / 15) / 2, 0.5)
    assert bins[2].confidence is None and bins[2].accuracy is None
    assert bins[14].upper == 1.0
    json.dumps([b.as_dict() for b in bins])  # empty bins stay valid JSON


def test_ece_by_hand():
    # bin (0.4, 0.6]: conf 0.5 twice, 1 right -> gap 0; bin (0.8, 1]: conf .9 twice, 2 right -> .1
    assert expected_calibration_error([0.5, 0.5, 0.9, 0.9], [1, 0, 1, 1], bins=5) == (
        pytest.approx(0.5 * 0.1)
    )
    assert expected_calibration_error(torch.tensor([1.0, 1.0]), torch.tensor([True, True])) == 0
    assert expected_calibration_error([0.0], [True]) == 1.0
    assert math.isnan(expected_calibration_error([], []))
    bins = reliability_bins([0.5, 0.5, 0.9, 0.9], [1, 0, 1, 1], bins=5)
    assert ece_from_bins(bins) == pytest.approx(0.05)


def test_ece_refuses_bad_input():
    with pytest.raises(ValueError, match="one each"):
        expected_calibration_error([0.5, 0.6], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.5], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([math.nan], [True])
    with pytest.raises(ValueError, match="0/1"):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error([0.5], [1], bins=0)


def test_streamed_metric_equals_the_function():
    generator = torch.Generator().manual_seed(1)
    confidences = torch.rand(5000, generator=generator) ** 0.3
    correct = torch.rand(5000, generator=generator) < confidences * 0.9
    metric = CalibrationError(bins=15)
    for conf, right in zip(confidences.split(777), correct.split(777), strict=True):
        metric.update(conf.float(), right.long())
    assert float(metric.compute()) == pytest.approx(
        expected_calibration_error(confidences, correct), abs=1e-12
    )
    streamed = metric.reliability_bins()
    direct = reliability_bins(confidences, correct)
    assert [b.count for b in streamed] == [b.count for b in direct]
    for got, want in zip(streamed, direct, strict=True):
        assert got.accuracy == pytest.approx(want.accuracy)
        assert got.confidence == pytest.approx(want.confidence)


def test_streamed_metric_with_empty_bins_and_no_data():
    metric = CalibrationError(bins=10)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(metric.compute()))
    metric.reset()
    metric.update(torch.tensor([0.95, 0.95, 0.05]), torch.tensor([True, False, False]))
    metric.update(torch.tensor([]), torch.tensor([], dtype=torch.bool))
    assert float(metric.compute()) == pytest.approx((0.45 * 2 + 0.05) / 3)
    bins = metric.reliability_bins()
    assert [b.count for b in bins] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert sum(b.confidence is None for b in bins) == 8
    metric.reset()
    metric.update(torch.tensor([0.5]), torch.tensor([1]))
    assert [b.count for b in metric.reliability_bins()][4] == 1  # not the cached bins
    unchecked = CalibrationError(validate_args=False)
    unchecked.update(torch.tensor([0.5]), torch.tensor([1]))
    assert float(unchecked.compute()) == pytest.approx(0.5)


def test_span_correctness():
    gold = [(0, 2, "PER"), (4, 5, "LOC")]
    predicted = [(0, 2, "PER"), (4, 5, "ORG"), (3, 5, "LOC"), (0, 2, "PER")]
    assert span_correctness(predicted, gold) == [True, False, False, True]
    assert span_correctness([], gold) == []
    assert span_correctness([("PER", 0, 1)], []) == [False]


def test_reliability_diagram_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from seqtag.calibration.reliability import save_reliability_diagram

    generator = torch.Generator().manual_seed(2)
    confidences = torch.rand(2000, generator=generator)
    before = reliability_bins(confidences, torch.rand(2000, generator=generator) < 0.6)
    after = reliability_bins(confidences, torch.rand(2000, generator=generator) < confidences)
    path = tmp_path / "sub" / "reliability.png"
    save_reliability_diagram(
        path, {"before calibration": before, "after calibration": after}, title="dev tokens"
    )
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
    # Bins read back from JSON plot too, and an empty curve does not break the legend.
    again = tmp_path / "again.png"
    save_reliability_diagram(
        again, {"from json": [b.as_dict() for b in before], "empty": reliability_bins([], [])}
    )
    assert again.read_bytes().startswith(b"\x89PNG")


def test_reliability_diagram_refuses_a_directory_and_no_curves(tmp_path):
    pytest.importorskip("matplotlib")
    from seqtag.calibration.reliability import save_reliability_diagram

    bins = reliability_bins([0.5], [True])
    with pytest.raises(OutputError, match="directory") as caught:
        save_reliability_diagram(tmp_path, {"a": bins})
    assert isinstance(caught.value, OSError)
    with pytest.raises(ValueError, match="no curves"):
        save_reliability_diagram(tmp_path / "x.png", {})


def test_reliability_diagram_without_matplotlib(tmp_path, monkeypatch):
    from seqtag.calibration.reliability import PlotDependencyError, save_reliability_diagram

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotDependencyError, match=r'pip install "seqtag\[plot\]"') as caught:
        save_reliability_diagram(tmp_path / "x.png", {"a": reliability_bins([0.5], [True])})
    assert isinstance(caught.value, SeqtagError) and isinstance(caught.value, ImportError)
    assert not (tmp_path / "x.png").exists()
