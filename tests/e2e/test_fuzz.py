"""Property-based tests: random tag sequences never crash the scheme code or the span metric.

Every outcome is either a correct result or the documented ``TagSchemeError``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.data.schemes import SCHEMES, convert_tags, get_spans, validate_tags
from seqtag.errors import TagSchemeError
from seqtag.metrics.span_f1 import SpanF1

PREFIXES = ["B-", "I-", "E-", "S-", "X-", "", "b-"]
TYPES = ["PER", "LOC", "", "A-B"]
tag = st.one_of(
    st.just("O"),
    st.builds(lambda p, t: p + t, st.sampled_from(PREFIXES), st.sampled_from(TYPES)),
    st.text(max_size=4),
)
sentence = st.lists(tag, min_size=0, max_size=12)
well_formed_tag = st.one_of(
    st.just("O"),
    st.builds(lambda p, t: p + t, st.sampled_from(["B-", "I-"]), st.sampled_from(["PER", "LOC"])),
)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)


@FUZZ
@given(sentence, st.sampled_from(SCHEMES), st.sampled_from(SCHEMES))
def test_convert_is_a_result_or_a_scheme_error(tags, source, target):
    try:
        converted = convert_tags(tags, source, target)
    except TagSchemeError as err:
        assert "not valid" in str(err) or "scheme" in str(err)
        return
    assert len(converted) == len(tags)
    validate_tags(converted, target)
    assert get_spans(converted, target) == get_spans(tags, source)
    # Converting back gives the same spans again.
    assert get_spans(convert_tags(converted, target, source), source) == get_spans(tags, source)


@FUZZ
@given(st.lists(st.tuples(sentence, sentence), min_size=1, max_size=5))
def test_span_metric_is_a_score_or_a_scheme_error(pairs):
    metric = SpanF1(["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], "iob2")
    golds = [gold[: len(pred)] + ["O"] * (len(pred) - len(gold)) for pred, gold in pairs]
    preds = [pred for pred, _ in pairs]
    try:
        metric.update_strings(preds, golds)
    except TagSchemeError:
        return
    scores = metric.compute()
    for name in ("precision", "recall", "f1"):
        assert 0.0 <= float(scores[name]) <= 1.0


@FUZZ
@given(st.lists(st.lists(well_formed_tag, max_size=10), min_size=1, max_size=5))
def test_perfect_predictions_score_one_or_nothing(golds):
    metric = SpanF1(["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], "iob2")
    metric.update_strings(golds, golds)
    scores = metric.compute()
    has_chunks = any(get_spans(g, "iob2") for g in golds)
    assert float(scores["f1"]) == pytest.approx(1.0 if has_chunks else 0.0)
