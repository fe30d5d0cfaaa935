"""Partial-label losses and temperature scaling, against brute-force enumeration.

The oracle scores every tag path of a tiny sentence with plain float64 sums (sharing no code
with :mod:`seqtag.models.crf.layer`) and sums the paths that agree with ``allowed``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from seqtag.models.crf.algorithms import LogPartition
from seqtag.models.crf.layer import CRF
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger

PENALTY = -1e4
LENGTHS = (4, 2, 1)


def _make_crf(num_tags: int, constrained: bool, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():
        for param in (crf.transitions, crf.start_transitions, crf.end_transitions):
            param.uniform_(-1.0, 1.0)
    if constrained:
        allowed = torch.ones(num_tags, num_tags, dtype=torch.bool)
        allowed[0, 2] = False
        allowed[1, 1] = False
        allowed[num_tags - 1, 0] = False
        start = torch.ones(num_tags, dtype=torch.bool)
        start[2] = False
        end = torch.ones(num_tags, dtype=torch.bool)
        end[1] = False
        crf.set_constraints(allowed, start, end)
    return crf


def _batch(num_tags: int, lengths: tuple[int, ...] = LENGTHS, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    emissions = torch.randn(batch, length, num_tags, generator=gen) * 2
    tags = torch.randint(num_tags, (batch, length), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    # Random tag sets: some known (one tag), some unknown (all), some ambiguous.
    allowed = torch.rand(batch, length, num_tags, generator=gen) < 0.5
    allowed[..., 0] |= ~allowed.any(dim=2)  # at least one tag everywhere
    allowed[0, 1] = True  # a fully unknown position
    allowed[~mask] = False  # padding may hold anything
    return emissions, tags.masked_fill(~mask, -100), mask, allowed


def _oracle_scores(crf: CRF, temperature: torch.Tensor | float = 1.0):
    """float64 (start, trans, end) as functions of the parameters: learned / T, penalty kept."""
    params = {
        name: getattr(crf, name).detach().double().requires_grad_(True)
        for name in ("start_transitions", "transitions", "end_transitions")
    }
    penalty = torch.tensor(PENALTY, dtype=torch.float64)
    start = torch.where(crf.allowed_start, params["start_transitions"] / temperature, penalty)
    trans = torch.where(crf.allowed_transitions, params["transitions"] / temperature, penalty)
    end = torch.where(crf.allowed_end, params["end_transitions"] / temperature, penalty)
    return params, (start, trans, end)


def _oracle_partial(
    scores: tuple[torch.Tensor, ...],
    em: torch.Tensor,
    lengths: tuple[int, ...],
    allowed: torch.Tensor | None,
) -> torch.Tensor:
    """``[B]`` log Z - log Z_allowed (allowed None: all paths, giving 0) by enumeration."""
    start, trans, end = scores
    out = []
    for b, n in enumerate(lengths):
        every, agreeing = [], []
        for path in itertools.product(range(em.size(2)), repeat=n):
            total = start[path[0]] + end[path[-1]]
            for i, y in enumerate(path):
                total = total + em[b, i, y]
            for x, y in itertools.pairwise(path):
                total = total + trans[x, y]
            every.append(total)
            if allowed is None or all(bool(allowed[b, i, y]) for i, y in enumerate(path)):
                agreeing.append(total)
        out.append(
            torch.logsumexp(torch.stack(every), 0) - torch.logsumexp(torch.stack(agreeing), 0)
        )
    return torch.stack(out)


def _keep_a_valid_path(crf: CRF, allowed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Allow one constraint-abiding path too, so the agreeing paths are not all penalised.

    (Annotation that contradicts the constraints has a huge, penalty-sized loss whose exact
    value depends on how penalties add up: see test_contradicting_annotation_is_huge_but_finite.)
    """
    gen = torch.Generator().manual_seed(7)
    path = crf.decode(torch.randn(allowed.shape, generator=gen), mask)
    return allowed | (F.one_hot(path, allowed.size(2)).bool() & mask.unsqueeze(2))


CASES = [
    pytest.param(3, False, id="T3"),
    pytest.param(4, False, id="T4"),
    pytest.param(3, True, id="T3-constrained"),
    pytest.param(4, True, id="T4-constrained"),
]


@pytest.mark.parametrize("lengths", [LENGTHS, (1, 3)], ids=["mixed", "short"])
@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_partial_nll_and_gradients_match_brute_force(
    num_tags: int, constrained: bool, lengths: tuple[int, ...]
) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, _, mask, allowed = _batch(num_tags, lengths)
    allowed = _keep_a_valid_path(crf, allowed, mask)
    weights = torch.tensor([0.5, -1.0, 2.0][: len(lengths)])
    emissions.requires_grad_(True)
    nll = crf.partial_nll(emissions, allowed, mask, reduction="none")
    (nll * weights).sum().backward()

    em64 = emissions.detach().double().requires_grad_(True)
    params, scores = _oracle_scores(crf)
    expected = _oracle_partial(scores, em64, lengths, allowed)
    (expected * weights.double()).sum().backward()
    torch.testing.assert_close(nll.double(), expected.detach(), atol=1e-4, rtol=1e-5)
    assert emissions.grad is not None and torch.isfinite(emissions.grad).all()
    torch.testing.assert_close(emissions.grad.double(), em64.grad, atol=1e-5, rtol=1e-4)
    for name, param in params.items():
        want = param.grad if param.grad is not None else torch.zeros_like(param)
        got = getattr(crf, name).grad.double()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_one_hot_allowed_is_the_ordinary_nll(num_tags: int, constrained: bool) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, _, mask, _ = _batch(num_tags)
    # Gold paths that keep the constraints (else both losses are penalty-sized, and differ
    # slightly in how the penalties add up).
    tags = crf.decode(torch.randn(emissions.shape), mask).masked_fill(~mask, -100)
    one_hot = F.one_hot(tags.clamp(min=0), num_tags).bool() & mask.unsqueeze(2)
    for reduction in ("none", "sum", "mean", "token_mean"):
        partial = crf.partial_nll(emissions, one_hot, mask, reduction=reduction)
        full = crf(emissions, tags, mask, reduction=reduction)
        torch.testing.assert_close(partial, full, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("constrained", [False, True])
def test_all_allowed_costs_exactly_zero(constrained: bool) -> None:
    crf = _make_crf(4, constrained)
    emissions, _, mask, _ = _batch(4)
    emissions.requires_grad_(True)
    everything = torch.ones(*emissions.shape, dtype=torch.bool)
    nll = crf.partial_nll(emissions, everything, mask, reduction="none")
    assert nll.eq(0).all()
    nll.sum().backward()
    assert emissions.grad.abs().max() < 1e-6


def test_contradicting_annotation_is_huge_but_finite() -> None:
    crf = _make_crf(3, True)
    emissions, _, mask, _ = _batch(3)
    allowed = torch.ones(*emissions.shape, dtype=torch.bool)
    allowed[0, 0] = torch.tensor([False, False, True])  # tag 2 may not start a sentence
    emissions.requires_grad_(True)
    nll = crf.partial_nll(emissions, allowed, mask, reduction="none")
    nll.sum().backward()
    assert nll[0] > 1000 and torch.isfinite(nll).all()
    assert nll[1:].abs().max() < 1e-4  # the other sentences are fully unknown
    assert torch.isfinite(emissions.grad).all() and emissions.grad.abs().max() <= 1 + 1e-5


def test_partial_nll_errors() -> None:
    crf = _make_crf(3, False)
    emissions, _, mask, allowed = _batch(3)
    with pytest.raises(ValueError, match="shape"):
        crf.partial_nll(emissions, allowed[:, :2], mask)
    with pytest.raises(ValueError, match="bool"):
        crf.partial_nll(emissions, allowed.float(), mask)
    empty = allowed.clone()
    empty[1, 1] = False  # a real token (the second sentence has 2) that allows nothing
    with pytest.raises(ValueError, match=r"no tag at real positions.*\[1, 1\]"):
        crf.partial_nll(emissions, empty, mask)
    with pytest.raises(ValueError, match="reduction"):
        crf.partial_nll(emissions, allowed, mask, reduction="avg")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- temperature


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_temperature_nll_and_its_gradient_match_brute_force(
    num_tags: int, constrained: bool
) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, tags, mask, allowed = _batch(num_tags)
    allowed = _keep_a_valid_path(crf, allowed, mask)
    temperature = torch.tensor(1.7, requires_grad=True)
    nll = crf(emissions, tags, mask, reduction="sum", temperature=temperature)
    (grad,) = torch.autograd.grad(nll, temperature)

    t64 = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    _, scores = _oracle_scores(crf, t64)
    em64 = emissions.double() / t64
    one_hot = F.one_hot(tags.clamp(min=0), num_tags).bool()
    expected = _oracle_partial(scores, em64, LENGTHS, one_hot).sum()
    (want,) = torch.autograd.grad(expected, t64)
    assert nll.item() == pytest.approx(expected.item(), abs=1e-3, rel=1e-5)
    assert grad.item() == pytest.approx(want.item(), abs=1e-4, rel=1e-4)

    partial = crf.partial_nll(emissions, allowed, mask, reduction="sum", temperature=1.7)
    t64 = torch.tensor(1.7, dtype=torch.float64)
    _, scores = _oracle_scores(crf, t64)
    expected = _oracle_partial(scores, emissions.double() / t64, LENGTHS, allowed).sum()
    assert partial.item() == pytest.approx(expected.item(), abs=1e-3, rel=1e-5)


def test_temperature_none_and_one_are_bit_identical() -> None:
    crf = _make_crf(4, True)
    emissions, tags, mask, allowed = _batch(4)
    for temperature in (1.0, torch.tensor(1.0)):
        assert torch.equal(
            crf(emissions, tags, mask), crf(emissions, tags, mask, "mean", temperature)
        )
        assert torch.equal(
            crf.log_partition(emissions, mask), crf.log_partition(emissions, mask, temperature)
        )
        assert torch.equal(
            crf.marginals(emissions, mask), crf.marginals(emissions, mask, temperature)
        )
        assert torch.equal(
            crf.partial_nll(emissions, allowed, mask),
            crf.partial_nll(emissions, allowed, mask, temperature=temperature),
        )


def test_temperature_gradcheck_through_the_fast_backward() -> None:
    """Dividing the inputs of the hand-written log Z by T: gradcheck in float64, T included."""
    crf = _make_crf(3, True)
    emissions, _, mask, _ = _batch(3, lengths=(3, 1, 2))
    start, trans, end = (s.detach().double() for s in crf.constrained_scores())

    def log_z(temperature: torch.Tensor, em: torch.Tensor) -> torch.Tensor:
        return LogPartition.apply(
            em / temperature, mask, start / temperature, trans / temperature, end / temperature
        )

    inputs = (
        torch.tensor(0.8, dtype=torch.float64, requires_grad=True),
        emissions.double().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(log_z, inputs)


def test_hot_temperature_keeps_constraints_and_flattens_marginals() -> None:
    crf = _make_crf(4, True)
    emissions, _, mask, _ = _batch(4)
    cold = crf.marginals(emissions, mask)
    hot = crf.marginals(emissions, mask, temperature=50.0)
    assert hot[0, 0, 2] < 1e-6  # a forbidden start stays forbidden at any temperature
    real = mask.unsqueeze(2).expand_as(hot)
    assert hot[real].max() < cold[real].max()
    torch.testing.assert_close(hot.sum(dim=2), mask.float())


# ---------------------------------------------------------------------- the tagger


def _tagger(decoder: str, num_tags: int = 4) -> Tagger:
    torch.manual_seed(0)
    tagger = Tagger(BiRNNEncoder(10, 4, hidden_size=3, dropout=0.0), num_tags, decoder)  # type: ignore[arg-type]
    if tagger.crf is not None:
        constrained = _make_crf(num_tags, True)
        tagger.crf.load_state_dict(constrained.state_dict())
    return tagger


def test_softmax_partial_loss() -> None:
    tagger = _tagger("softmax")
    emissions, tags, mask, allowed = _batch(4)
    # One-hot: the ordinary cross-entropy over the real tokens.
    one_hot = F.one_hot(tags.clamp(min=0), 4).bool() & mask.unsqueeze(2)
    torch.testing.assert_close(
        tagger.loss(emissions, tags, mask, one_hot), tagger.loss(emissions, tags)
    )
    torch.testing.assert_close(
        tagger.loss(emissions, tags, None, one_hot), tagger.loss(emissions, tags)
    )
    # Mixed sets: -log of the summed allowed probabilities, unknown tokens left out.
    probs = emissions.softmax(dim=2)
    terms = [
        -torch.log(probs[b, i][allowed[b, i]].sum())
        for b, n in enumerate(LENGTHS)
        for i in range(n)
        if not allowed[b, i].all()
    ]
    assert 0 < len(terms) < sum(LENGTHS)
    expected = torch.stack(terms).mean()
    torch.testing.assert_close(tagger.loss(emissions, tags, mask, allowed), expected)
    # Temperature, with a gradient.
    temperature = torch.tensor(2.0, requires_grad=True)
    hot = tagger.loss(emissions, tags, mask, allowed, temperature)
    probs = (emissions / 2.0).softmax(dim=2)
    terms = [
        -torch.log(probs[b, i][allowed[b, i]].sum())
        for b, n in enumerate(LENGTHS)
        for i in range(n)
        if not allowed[b, i].all()
    ]
    torch.testing.assert_close(hot, torch.stack(terms).mean())
    hot.backward()
    assert temperature.grad is not None and torch.isfinite(temperature.grad)


def test_softmax_partial_loss_without_annotation_is_zero() -> None:
    tagger = _tagger("softmax")
    emissions, tags, mask, _ = _batch(4)
    emissions.requires_grad_(True)
    loss = tagger.loss(emissions, tags, mask, torch.ones(*emissions.shape, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert emissions.grad is not None and emissions.grad.eq(0).all()


def test_crf_tagger_loss_with_allowed_and_temperature() -> None:
    tagger = _tagger("crf")
    emissions, tags, mask, allowed = _batch(4)
    expected = tagger.crf.partial_nll(emissions, allowed, mask, reduction="token_mean")
    assert torch.equal(tagger.loss(emissions, tags, mask, allowed), expected)
    assert torch.equal(
        tagger.loss(emissions, tags, mask),
        tagger.crf(emissions, tags.clamp(min=0), mask, "token_mean"),
    )
    temperature = torch.tensor(1.3, requires_grad=True)
    loss = tagger.loss(emissions, tags, mask, temperature=temperature)
    loss.backward()
    assert temperature.grad is not None and temperature.grad != 0
    # The gradient matches a finite difference of the loss in T.
    with torch.no_grad():
        step = 1e-2
        up = tagger.loss(emissions, tags, mask, temperature=1.3 + step)
        down = tagger.loss(emissions, tags, mask, temperature=1.3 - step)
    assert temperature.grad.item() == pytest.approx(((up - down) / (2 * step)).item(), rel=2e-3)


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_tagger_temperature_changes_confidences_not_tags(decoder: str) -> None:
    tagger = _tagger(decoder)
    emissions, _, mask, _ = _batch(4)
    assert tagger.temperature.dtype == torch.float32 and tagger.temperature.item() == 1.0
    best, confidence = tagger.decode(emissions, mask)
    probs = tagger.token_probabilities(emissions, mask)
    torch.testing.assert_close(probs.sum(dim=2), mask.float())
    tagger.temperature.fill_(2.5)
    hot_best, hot_confidence = tagger.decode(emissions, mask)
    assert torch.equal(hot_best, best)
    assert torch.equal(
        tagger.predict(emissions, mask), best if decoder == "crf" else emissions.argmax(-1)
    )
    assert (hot_confidence[mask] < confidence[mask]).any()
    scaled = tagger.token_probabilities(emissions, mask)
    chosen = scaled.gather(2, best.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(chosen[mask], hot_confidence[mask])


def test_temperature_travels_in_state_dict_and_old_checkpoints_load() -> None:
    tagger = _tagger("crf")
    tagger.temperature.fill_(1.8)
    state = tagger.state_dict()
    assert state["temperature"].item() == pytest.approx(1.8)
    fresh = _tagger("crf")
    fresh.load_state_dict(state)
    assert fresh.temperature.item() == pytest.approx(1.8)
    old = {k: v for k, v in state.items() if k != "temperature"}
    fresh.load_state_dict(old)  # strict: a checkpoint from before calibration
    assert fresh.temperature.item() == 1.0
