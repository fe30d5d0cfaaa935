"""Span and sentence confidences against brute-force enumeration of every tag sequence.

The oracle scores every path of a tiny sentence in float64, reads each path's chunks with
:func:`seqtag.data.schemes.get_spans` (conlleval's rules), and sums the probabilities of the
paths that contain a span: no code shared with :mod:`seqtag.models.crf.spans`.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from seqtag.data.schemes import allowed_transitions, get_spans
from seqtag.models.crf.layer import CRF
from seqtag.models.crf.spans import (
    SpanTags,
    best_path_probability,
    crf_span_marginals,
    softmax_span_confidence,
)
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger

PENALTY = -1e4
IOB = ["O", "B-A", "I-A", "B-B", "I-B"]
BIOES = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"]
SCHEMES = [
    pytest.param(IOB, "iob2", (4, 3, 1), id="iob2"),
    pytest.param(IOB, "iob1", (4, 3, 1), id="iob1"),
    pytest.param(BIOES, "bioes", (4, 2, 1), id="bioes"),
]


def _crf(tags: list[str], scheme: str, constrained: bool, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(tags))
    with torch.no_grad():
        for param in (crf.transitions, crf.start_transitions, crf.end_transitions):
            param.uniform_(-1.0, 1.0)
    if constrained:
        crf.set_constraints(*allowed_transitions(tags, scheme))
    return crf


def _emissions(num_tags: int, lengths: tuple[int, ...], seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(lengths), max(lengths), num_tags, generator=gen) * 1.5
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return emissions, mask


def _path_probs(
    crf: CRF | None, emissions: torch.Tensor, n: int, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """All paths ``[P, n]`` of one sentence (emissions ``[L, T]``) and their probabilities.

    ``crf=None``: tokens tagged independently from their softmax.
    """
    num_tags = emissions.size(1)
    paths = torch.tensor(list(itertools.product(range(num_tags), repeat=n)))
    em = emissions[:n].double() / temperature
    if crf is None:
        log_p = em.log_softmax(dim=1)[torch.arange(n), paths].sum(dim=1)
        return paths, log_p.exp()
    penalty = torch.tensor(PENALTY, dtype=torch.float64)
    start = torch.where(crf.allowed_start, crf.start_transitions.double() / temperature, penalty)
    trans = torch.where(crf.allowed_transitions, crf.transitions.double() / temperature, penalty)
    end = torch.where(crf.allowed_end, crf.end_transitions.double() / temperature, penalty)
    score = start[paths[:, 0]] + end[paths[:, -1]] + em[torch.arange(n), paths].sum(dim=1)
    if n > 1:
        score = score + trans[paths[:, :-1], paths[:, 1:]].sum(dim=1)
    return paths, score.detach().softmax(dim=0)


def _oracle_span_probs(
    crf: CRF | None,
    emissions: torch.Tensor,
    lengths: tuple[int, ...],
    tags: list[str],
    scheme: str,
    temperature: float = 1.0,
) -> dict[tuple[int, str, int, int], float]:
    """``(row, type, start, end) -> P(span among the path's chunks)`` for every span found."""
    probs: dict[tuple[int, str, int, int], float] = {}
    for b, n in enumerate(lengths):
        paths, p = _path_probs(crf, emissions[b], n, temperature)
        for path, prob in zip(paths.tolist(), p.tolist(), strict=True):
            for type_, start, end in get_spans([tags[i] for i in path], scheme):
                key = (b, type_, start, end)
                probs[key] = probs.get(key, 0.0) + prob
    return probs


def _every_span(lengths: tuple[int, ...], span_tags: SpanTags) -> torch.Tensor:
    rows = [
        (b, (type_, s, e))
        for b, n in enumerate(lengths)
        for s in range(n)
        for e in range(s + 1, n + 1)
        for type_ in span_tags.types
    ]
    return span_tags.encode(rows)


def _compare(got: torch.Tensor, spans: torch.Tensor, span_tags: SpanTags, oracle: dict) -> None:
    expected = torch.tensor(
        [oracle.get((b, span_tags.types[k], s, e), 0.0) for b, s, e, k in spans.tolist()]
    )
    torch.testing.assert_close(got.double(), expected.double(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "constrained"])
@pytest.mark.parametrize(("tags", "scheme", "lengths"), SCHEMES)
def test_crf_span_marginals_match_brute_force(
    tags: list[str], scheme: str, lengths: tuple[int, ...], constrained: bool
) -> None:
    crf = _crf(tags, scheme, constrained)
    emissions, mask = _emissions(len(tags), lengths)
    span_tags = SpanTags(tags, scheme)
    spans = _every_span(lengths, span_tags)
    got = crf_span_marginals(crf, emissions, mask, spans, span_tags, chunk_size=7)
    assert got.shape == (len(spans),) and got.dtype == torch.float32
    oracle = _oracle_span_probs(crf, emissions, lengths, tags, scheme)
    _compare(got, spans, span_tags, oracle)
    assert got.max() > 0.2  # not a vacuous comparison of zeros

    # One start and type, different ends: exclusive events.
    totals: dict[tuple[int, int, int], float] = {}
    for (b, s, _, k), p in zip(spans.tolist(), got.tolist(), strict=True):
        totals[(b, s, k)] = totals.get((b, s, k), 0.0) + p
    assert max(totals.values()) <= 1.0 + 1e-5

    # The temperature divides every learned score (the penalties stay).
    hot = crf_span_marginals(crf, emissions, mask, spans, span_tags, temperature=2.0)
    _compare(hot, spans, span_tags, _oracle_span_probs(crf, emissions, lengths, tags, scheme, 2.0))
    assert torch.equal(
        crf_span_marginals(crf, emissions, mask, spans, span_tags, temperature=1.0), got
    )


def test_chunks_of_the_best_path_are_at_least_as_likely_as_it() -> None:
    """Every path holding a predicted chunk counts, the best path among them."""
    crf = _crf(IOB, "iob2", True)
    lengths = (4, 3)
    emissions, mask = _emissions(len(IOB), lengths)
    emissions = emissions * 5
    span_tags = SpanTags(IOB, "iob2")
    best = crf.decode(emissions, mask)
    predicted = [
        (b, span)
        for b, n in enumerate(lengths)
        for span in get_spans([IOB[i] for i in best[b, :n]])
    ]
    assert predicted
    with torch.no_grad():
        probs = crf_span_marginals(crf, emissions, mask, span_tags.encode(predicted), span_tags)
        sentence = best_path_probability(crf, emissions, mask)
    floor = sentence[[b for b, _ in predicted]]
    assert (probs >= floor - 1e-6).all() and (probs <= 1).all()
    assert floor.min() > 0.3  # peaked enough for the comparison to mean something


@pytest.mark.parametrize(("tags", "scheme", "lengths"), SCHEMES)
def test_softmax_span_confidence(tags: list[str], scheme: str, lengths: tuple[int, ...]) -> None:
    emissions, mask = _emissions(len(tags), lengths)
    span_tags = SpanTags(tags, scheme)
    spans = _every_span(lengths, span_tags)
    # With the boundary tokens: exact for independently tagged tokens.
    exact = softmax_span_confidence(emissions, spans, span_tags, mask, boundaries=True)
    _compare(exact, spans, span_tags, _oracle_span_probs(None, emissions, lengths, tags, scheme))
    hot = softmax_span_confidence(emissions, spans, span_tags, mask, 3.0, boundaries=True)
    oracle = _oracle_span_probs(None, emissions, lengths, tags, scheme, 3.0)
    _compare(hot, spans, span_tags, oracle)
    # Without (the default): the product of the span's own tokens' probabilities.
    approx = softmax_span_confidence(emissions, spans, span_tags, mask)
    probs = emissions.softmax(dim=2)
    for (b, s, e, k), got in zip(spans.tolist(), approx.tolist(), strict=True):
        type_ = span_tags.types[k]
        any_of_type = [j for j, t in enumerate(tags) if t != "O" and t[2:] == type_]
        goes_on = [j for j in any_of_type if tags[j][0] in "IE"]
        want = probs[b, s, any_of_type].sum()
        for i in range(s + 1, e):
            want = want * probs[b, i, goes_on].sum()
        assert got == pytest.approx(want.item(), abs=1e-6)
    assert (approx >= exact - 1e-6).all()  # dropping conditions can only add probability


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "constrained"])
def test_best_path_probability(constrained: bool) -> None:
    crf = _crf(IOB, "iob2", constrained)
    lengths = (4, 3, 1)
    emissions, mask = _emissions(len(IOB), lengths)
    for temperature in (1.0, 0.7):
        got = best_path_probability(crf, emissions, mask, temperature)
        want = [
            _path_probs(crf, emissions[b], n, temperature)[1].max() for b, n in enumerate(lengths)
        ]
        torch.testing.assert_close(got.double(), torch.stack(want), atol=1e-5, rtol=1e-4)
        soft = best_path_probability(None, emissions, mask, temperature)
        want = [
            _path_probs(None, emissions[b], n, temperature)[1].max() for b, n in enumerate(lengths)
        ]
        torch.testing.assert_close(soft.double(), torch.stack(want), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_tagger_uses_its_temperature(decoder: str) -> None:
    torch.manual_seed(0)
    tagger = Tagger(BiRNNEncoder(10, 4, hidden_size=3, dropout=0.0), len(IOB), decoder)  # type: ignore[arg-type]
    emissions, mask = _emissions(len(IOB), (4, 2))
    span_tags = SpanTags(IOB, "iob2")
    spans = span_tags.encode([(0, ("A", 0, 2)), (1, ("B", 1, 2))])
    tagger.temperature.fill_(1.5)
    if tagger.crf is None:
        want = softmax_span_confidence(emissions, spans, span_tags, mask, 1.5)
    else:
        want = crf_span_marginals(tagger.crf, emissions, mask, spans, span_tags, 1.5)
    assert torch.equal(tagger.span_confidence(emissions, mask, spans, span_tags), want)
    assert torch.equal(
        tagger.best_path_probability(emissions, mask),
        best_path_probability(tagger.crf, emissions, mask, 1.5),
    )


def test_span_tags_and_errors() -> None:
    span_tags = SpanTags(BIOES, "iobes")
    assert span_tags.types == ("A", "B")
    assert span_tags.opens[0].nonzero().flatten().tolist() == [1, 4]  # B-A, S-A
    assert span_tags.continues[1].nonzero().flatten().tolist() == [6, 7]  # I-B, E-B
    assert span_tags.encode([]).shape == (0, 4)
    with pytest.raises(KeyError, match="'C'"):
        span_tags.encode([(0, ("C", 0, 1))])
    crf = _crf(BIOES, "bioes", False)
    emissions, mask = _emissions(len(BIOES), (3, 1))
    assert crf_span_marginals(crf, emissions, mask, span_tags.encode([]), span_tags).shape == (0,)
    for bad in ([(2, ("A", 0, 1))], [(1, ("A", 0, 2))], [(0, ("A", 1, 1))]):
        with pytest.raises(ValueError, match="not a span of a sentence"):
            crf_span_marginals(crf, emissions, mask, span_tags.encode(bad), span_tags)
    with pytest.raises(ValueError, match="span_tags has 5"):
        crf_span_marginals(crf, emissions, mask, span_tags.encode([]), SpanTags(IOB, "iob2"))
