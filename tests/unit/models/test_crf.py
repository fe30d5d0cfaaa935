"""CRF tests against brute-force enumeration of every tag path on tiny inputs.

The oracle below shares no code with :mod:`seqtag.models.crf.layer`: it scores each path with a
plain Python sum in float64 and takes log-sum-exp / argmax over all ``T ** n`` paths.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seqtag.models.crf.algorithms import LogPartition, viterbi
from seqtag.models.crf.layer import CRF

PENALTY = -1e4
LENGTHS = (4, 2, 1)  # B=3 sentences of different lengths, padded to L=4


# ---------------------------------------------------------------------- oracle


def _penalised(crf: CRF) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (start, transitions, end) with forbidden entries replaced by the penalty."""
    penalty = torch.tensor(PENALTY, dtype=torch.float64)
    start = torch.where(crf.allowed_start, crf.start_transitions.double(), penalty)
    trans = torch.where(crf.allowed_transitions, crf.transitions.double(), penalty)
    end = torch.where(crf.allowed_end, crf.end_transitions.double(), penalty)
    return start.detach(), trans.detach(), end.detach()


def _path_score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """Score of one path over one unpadded sentence; emissions ``[n, T]``."""
    start, trans, end = _penalised(crf)
    em = emissions.detach().double()
    total = start[path[0]] + end[path[-1]]
    total = total + sum(em[i, y] for i, y in enumerate(path))
    total = total + sum(trans[a, b] for a, b in itertools.pairwise(path))
    return float(total)


def _all_paths(crf: CRF, emissions: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every path of an unpadded sentence (emissions ``[n, T]``) with its score."""
    n, num_tags = emissions.shape
    return {
        path: _path_score(crf, emissions, path)
        for path in itertools.product(range(num_tags), repeat=n)
    }


def _is_allowed(crf: CRF, path: tuple[int, ...]) -> bool:
    return (
        bool(crf.allowed_start[path[0]])
        and bool(crf.allowed_end[path[-1]])
        and all(bool(crf.allowed_transitions[a, b]) for a, b in itertools.pairwise(path))
    )


def logsumexp_finite(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# ---------------------------------------------------------------------- fixtures


def _make_crf(num_tags: int, constrained: bool, seed: int = 0) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():  # wider than the init range so the tests are not near-uniform
        crf.transitions.uniform_(-1.0, 1.0)
        crf.start_transitions.uniform_(-1.0, 1.0)
        crf.end_transitions.uniform_(-1.0, 1.0)
    if constrained:
        allowed = torch.ones(num_tags, num_tags, dtype=torch.bool)
        allowed[0, 2] = False  # like O -> I-X in BIO
        allowed[1, 1] = False
        allowed[num_tags - 1, 0] = False
        start = torch.ones(num_tags, dtype=torch.bool)
        start[2] = False  # a sentence cannot start inside a chunk
        end = torch.ones(num_tags, dtype=torch.bool)
        end[1] = False
        crf.set_constraints(allowed, start, end)
    return crf


def _batch(
    num_tags: int, lengths: tuple[int, ...] = LENGTHS, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random emissions ``[B, L, T]``, gold tags ``[B, L]`` (-100 on padding), mask ``[B, L]``."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    emissions = torch.randn(batch, length, num_tags, generator=gen) * 2
    tags = torch.randint(num_tags, (batch, length), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return emissions, tags.masked_fill(~mask, -100), mask


CASES = [
    pytest.param(3, False, id="T3"),
    pytest.param(4, False, id="T4"),
    pytest.param(3, True, id="T3-constrained"),
    pytest.param(4, True, id="T4-constrained"),
]


# ---------------------------------------------------------------------- brute-force comparisons


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_log_partition_matches_brute_force(num_tags: int, constrained: bool) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, _, mask = _batch(num_tags)
    log_z = crf.log_partition(emissions, mask)
    assert log_z.shape == (len(LENGTHS),)
    assert log_z.dtype == torch.float32
    for b, n in enumerate(LENGTHS):
        expected = logsumexp_finite(list(_all_paths(crf, emissions[b, :n]).values()))
        assert log_z[b].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_score_and_nll_match_brute_force(num_tags: int, constrained: bool) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, tags, mask = _batch(num_tags)
    if constrained:  # gold paths normally respect the constraints; keep one that does not
        tags[1, :2] = torch.tensor([1, 0])
    score = crf.score(emissions, tags, mask)
    nll = crf(emissions, tags, mask, reduction="none")
    assert nll.shape == score.shape == (len(LENGTHS),)
    for b, n in enumerate(LENGTHS):
        paths = _all_paths(crf, emissions[b, :n])
        gold = tuple(tags[b, :n].tolist())
        assert score[b].item() == pytest.approx(paths[gold], rel=1e-6, abs=1e-4)
        expected_nll = logsumexp_finite(list(paths.values())) - paths[gold]
        assert nll[b].item() == pytest.approx(expected_nll, rel=1e-6, abs=1e-4)
        assert nll[b].item() >= -1e-5  # a probability is at most 1


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_decode_matches_brute_force(num_tags: int, constrained: bool) -> None:
    crf = _make_crf(num_tags, constrained)
    for seed in range(5):
        emissions, _, mask = _batch(num_tags, seed=seed)
        best = crf.decode(emissions, mask)
        assert best.shape == mask.shape
        assert best.dtype == torch.long
        for b, n in enumerate(LENGTHS):
            paths = _all_paths(crf, emissions[b, :n])
            expected = max(paths, key=paths.__getitem__)
            assert tuple(best[b, :n].tolist()) == expected
            assert best[b, n:].eq(0).all()  # padding is documented as 0


@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_marginals_match_brute_force(num_tags: int, constrained: bool) -> None:
    crf = _make_crf(num_tags, constrained)
    emissions, _, mask = _batch(num_tags)
    marginals = crf.marginals(emissions, mask)
    assert marginals.shape == emissions.shape
    for b, n in enumerate(LENGTHS):
        paths = _all_paths(crf, emissions[b, :n])
        log_z = logsumexp_finite(list(paths.values()))
        expected = torch.zeros(n, num_tags, dtype=torch.float64)
        for path, s in paths.items():
            for i, y in enumerate(path):
                expected[i, y] += math.exp(s - log_z)
        torch.testing.assert_close(marginals[b, :n].double(), expected, atol=1e-5, rtol=0)
        assert marginals[b, n:].eq(0).all()


def test_marginals_are_gradient_of_log_partition() -> None:
    """d log Z / d emissions is the posterior marginal: an independent check of both."""
    crf = _make_crf(5, constrained=False)
    emissions, _, mask = _batch(5, lengths=(7, 3, 5, 1))
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask).sum().backward()
    torch.testing.assert_close(crf.marginals(emissions, mask), emissions.grad, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- constraints


def test_constrained_partition_matches_allowed_paths_only() -> None:
    """Forbidden paths weigh exp(-1e4) ~ 0, so log Z is the sum over allowed paths alone."""
    crf = _make_crf(4, constrained=True)
    emissions, _, mask = _batch(4)
    log_z = crf.log_partition(emissions, mask)
    for b, n in enumerate(LENGTHS):
        allowed = [s for p, s in _all_paths(crf, emissions[b, :n]).items() if _is_allowed(crf, p)]
        assert log_z[b].item() == pytest.approx(logsumexp_finite(allowed), abs=1e-4)


def test_decode_never_outputs_forbidden_transitions() -> None:
    crf = _make_crf(4, constrained=True)
    gen = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 9, (64,), generator=gen)
    lengths[0] = 8
    mask = torch.arange(8).unsqueeze(0) < lengths.unsqueeze(1)
    emissions = torch.randn(64, 8, 4, generator=gen) * 20  # strong evidence for anything
    emissions[:, :, 2] += 10  # favour the tag that may not start nor follow tag 0
    best = crf.decode(emissions, mask)
    for b, n in enumerate(lengths.tolist()):
        path = tuple(best[b, :n].tolist())
        assert _is_allowed(crf, path), path


def test_default_constraints_allow_everything_and_reset() -> None:
    crf = CRF(3)
    assert crf.allowed_transitions.all() and crf.allowed_start.all() and crf.allowed_end.all()
    emissions, tags, mask = _batch(3)
    before = crf(emissions, tags, mask)
    crf.set_constraints([[True, False, True], [True, True, True], [True, True, True]])
    assert not crf.allowed_transitions[0, 1]
    assert crf.allowed_start.all() and crf.allowed_end.all()  # None means all allowed
    crf.set_constraints(torch.ones(3, 3, dtype=torch.bool))
    torch.testing.assert_close(crf(emissions, tags, mask), before)


def test_constraints_travel_in_state_dict() -> None:
    crf = _make_crf(4, constrained=True)
    state = crf.state_dict()
    assert {"allowed_transitions", "allowed_start", "allowed_end"} <= state.keys()
    restored = CRF(4)
    restored.load_state_dict(state)
    emissions, tags, mask = _batch(4)
    torch.testing.assert_close(restored(emissions, tags, mask), crf(emissions, tags, mask))
    assert torch.equal(restored.decode(emissions, mask), crf.decode(emissions, mask))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allowed": torch.ones(3, 4, dtype=torch.bool)}, r"allowed must have shape \[4, 4\]"),
        ({"allowed": [[True] * 4] * 3 + [[True] * 3]}, "allowed must be a bool tensor"),
        (
            {"allowed": torch.ones(4, 4, dtype=torch.bool), "allowed_start": [True] * 5},
            r"allowed_start must have shape \[4\]",
        ),
        (
            {"allowed": torch.ones(4, 4, dtype=torch.bool), "allowed_end": torch.ones(4, 1)},
            r"allowed_end must have shape \[4\]",
        ),
        ({"allowed": torch.full((4, 4), 0.5)}, "allowed must hold booleans"),
        (
            {"allowed": torch.ones(4, 4, dtype=torch.bool), "allowed_start": [False] * 4},
            "allowed_start forbids every tag",
        ),
        (
            {"allowed": torch.ones(4, 4, dtype=torch.bool), "allowed_end": [0, 0, 0, 0]},
            "allowed_end forbids every tag",
        ),
    ],
)
def test_set_constraints_errors(kwargs: dict, message: str) -> None:
    crf = CRF(4)
    with pytest.raises(ValueError, match=message):
        crf.set_constraints(**kwargs)
    assert crf.allowed_transitions.all()  # a failed call changes nothing


def test_set_constraints_accepts_0_1_integers() -> None:
    crf = CRF(2)
    crf.set_constraints([[1, 0], [1, 1]], [1, 0], [0, 1])
    assert crf.allowed_transitions.tolist() == [[True, False], [True, True]]
    assert crf.allowed_start.tolist() == [True, False]
    assert crf.allowed_end.tolist() == [False, True]


# ---------------------------------------------------------------------- batching, reductions


def test_padded_batch_equals_each_sentence_alone() -> None:
    crf = _make_crf(5, constrained=True)
    lengths = (6, 1, 3, 6, 2)
    emissions, tags, mask = _batch(5, lengths=lengths)
    nll = crf(emissions, tags, mask, reduction="none")
    log_z = crf.log_partition(emissions, mask)
    best = crf.decode(emissions, mask)
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        em, tg = emissions[b : b + 1, :n], tags[b : b + 1, :n]
        alone = torch.ones(1, n, dtype=torch.bool)
        torch.testing.assert_close(crf(em, tg, alone, reduction="none"), nll[b : b + 1])
        torch.testing.assert_close(crf.log_partition(em, alone), log_z[b : b + 1])
        assert torch.equal(crf.decode(em, alone), best[b : b + 1, :n])
        torch.testing.assert_close(crf.marginals(em, alone), marginals[b : b + 1, :n])


@pytest.mark.parametrize("junk", [1e3, float("inf"), float("nan")])
def test_padding_content_is_ignored(junk: float) -> None:
    """Whatever an encoder leaves on padded positions must not leak into any result."""
    crf = _make_crf(4, constrained=True)
    emissions, tags, mask = _batch(4)
    noisy_em = emissions.masked_fill(~mask.unsqueeze(2), junk).requires_grad_(True)
    noisy_tags = tags.masked_fill(~mask, 3)
    nll = crf(noisy_em, noisy_tags, mask, reduction="none")
    torch.testing.assert_close(nll, crf(emissions, tags, mask, "none"))
    nll.sum().backward()
    assert torch.isfinite(noisy_em.grad).all() and noisy_em.grad[~mask].eq(0).all()
    assert torch.equal(crf.decode(noisy_em, mask), crf.decode(emissions, mask))
    torch.testing.assert_close(crf.marginals(noisy_em, mask), crf.marginals(emissions, mask))


def test_reductions() -> None:
    crf = _make_crf(4, constrained=False)
    emissions, tags, mask = _batch(4)
    per_sentence = crf(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="sum"), per_sentence.sum())
    torch.testing.assert_close(crf(emissions, tags, mask), per_sentence.mean())  # default
    torch.testing.assert_close(
        crf(emissions, tags, mask, reduction="token_mean"), per_sentence.sum() / sum(LENGTHS)
    )
    with pytest.raises(ValueError, match="reduction must be one of"):
        crf(emissions, tags, mask, reduction="avg")  # type: ignore[arg-type]


def test_single_token_sentences() -> None:
    crf = _make_crf(3, constrained=True)
    emissions, tags, mask = _batch(3, lengths=(1, 1))
    assert mask.shape == (2, 1)
    nll = crf(emissions, tags, mask, reduction="none")
    for b in range(2):
        paths = _all_paths(crf, emissions[b])
        expected = logsumexp_finite(list(paths.values())) - paths[(int(tags[b, 0]),)]
        # float32 keeps ~7 digits, so a forbidden path's ~1e4 score needs a relative tolerance
        assert nll[b].item() == pytest.approx(expected, rel=1e-6, abs=1e-4)
    best = crf.decode(emissions, mask)
    assert all(bool(crf.allowed_start[t]) and bool(crf.allowed_end[t]) for t in best[:, 0])


# ---------------------------------------------------------------------- gradients, dtypes


@pytest.mark.parametrize("constrained", [False, True])
def test_gradients_flow_and_are_finite(constrained: bool) -> None:
    crf = _make_crf(4, constrained)
    emissions, tags, mask = _batch(4)
    if constrained:
        tags[0, :2] = torch.tensor([0, 2])  # a gold path through a forbidden transition
    emissions.requires_grad_(True)
    loss = crf(emissions, tags, mask)
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (emissions.grad, crf.transitions.grad, crf.start_transitions.grad):
        assert grad is not None and torch.isfinite(grad).all()
    assert crf.end_transitions.grad is not None and torch.isfinite(crf.end_transitions.grad).all()
    assert crf.transitions.grad.abs().sum() > 0
    assert emissions.grad[~mask].eq(0).all()  # padding gets no gradient


@pytest.mark.parametrize("lengths", [LENGTHS, (1, 1, 1)], ids=["mixed", "one-token"])
@pytest.mark.parametrize(("num_tags", "constrained"), CASES)
def test_gradients_match_brute_force(
    num_tags: int, constrained: bool, lengths: tuple[int, ...]
) -> None:
    """Gradients of a weighted NLL against autograd through the float64 enumeration."""
    crf = _make_crf(num_tags, constrained)
    emissions, tags, mask = _batch(num_tags, lengths=lengths)
    weights = torch.tensor([0.5, -1.0, 2.0])  # uneven, so each sentence's share is checked
    emissions.requires_grad_(True)
    (crf(emissions, tags, mask, reduction="none") * weights).sum().backward()

    em64 = emissions.detach().double().requires_grad_(True)
    params = {
        name: getattr(crf, name).detach().double().requires_grad_(True)
        for name in ("start_transitions", "transitions", "end_transitions")
    }
    penalty = torch.tensor(PENALTY, dtype=torch.float64)
    start = torch.where(crf.allowed_start, params["start_transitions"], penalty)
    trans = torch.where(crf.allowed_transitions, params["transitions"], penalty)
    end = torch.where(crf.allowed_end, params["end_transitions"], penalty)

    def path_score(b: int, path: tuple[int, ...]) -> torch.Tensor:
        total = start[path[0]] + end[path[-1]]
        for i, y in enumerate(path):
            total = total + em64[b, i, y]
        for x, y in itertools.pairwise(path):
            total = total + trans[x, y]
        return total

    loss = torch.zeros((), dtype=torch.float64)
    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(num_tags), repeat=n))
        log_z = torch.logsumexp(torch.stack([path_score(b, p) for p in paths]), dim=0)
        gold = tuple(tags[b, :n].tolist())
        loss = loss + weights[b].double() * (log_z - path_score(b, gold))
    loss.backward()

    torch.testing.assert_close(emissions.grad.double(), em64.grad, atol=1e-5, rtol=1e-4)
    for name, param in params.items():
        # with one-token sentences the oracle never touches the transitions: no grad at all
        expected = param.grad if param.grad is not None else torch.zeros_like(param)
        torch.testing.assert_close(
            getattr(crf, name).grad.double(), expected, atol=1e-5, rtol=1e-4, msg=name
        )


@pytest.mark.parametrize("constrained", [False, True])
def test_log_partition_gradcheck(constrained: bool) -> None:
    """The hand-written backward of log Z against finite differences, in float64."""
    crf = _make_crf(3, constrained)
    emissions, _, mask = _batch(3, lengths=(3, 1, 2))
    start, trans, end = _penalised(crf)
    inputs = (
        emissions.double().requires_grad_(True),
        mask,
        start.requires_grad_(True),
        trans.requires_grad_(True),
        end.requires_grad_(True),
    )
    assert torch.autograd.gradcheck(LogPartition.apply, inputs)


def test_peaked_emissions_match_brute_force() -> None:
    """Scores far apart (as from a confident model) stay exact despite the clamped exp()."""
    crf = _make_crf(4, constrained=True)
    emissions, tags, mask = _batch(4)
    emissions = emissions * 60  # gaps of hundreds between tags
    emissions.requires_grad_(True)
    nll = crf(emissions, tags, mask, reduction="none")
    nll.sum().backward()
    assert torch.isfinite(emissions.grad).all()
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(LENGTHS):
        paths = _all_paths(crf, emissions[b, :n])
        log_z = logsumexp_finite(list(paths.values()))
        gold = tuple(tags[b, :n].tolist())
        assert nll[b].item() == pytest.approx(log_z - paths[gold], rel=1e-6, abs=1e-3)
        best = max(paths, key=paths.__getitem__)
        for i, y in enumerate(best):  # the winning path takes (almost) all the mass
            assert marginals[b, i, y].item() == pytest.approx(1.0, abs=1e-4)


def test_unreachable_tag_stays_finite() -> None:
    """A tag no transition may enter (like a padding tag) must not produce NaN or inf."""
    crf = _make_crf(4, constrained=False)
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[:, 3] = False
    start = torch.tensor([True, True, True, False])
    crf.set_constraints(allowed, start, start)
    emissions, tags, mask = _batch(4, lengths=(5, 3, 1))
    emissions[:, :, 3] += 50  # the model loves the unreachable tag
    tags = tags.masked_fill(tags == 3, 0)
    emissions.requires_grad_(True)
    loss = crf(emissions, tags, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emissions.grad).all()
    assert torch.isfinite(crf.transitions.grad).all()
    assert not (crf.decode(emissions, mask)[mask] == 3).any()
    marginals = crf.marginals(emissions, mask)
    assert torch.isfinite(marginals).all() and marginals[..., 3].max() < 1e-6
    torch.testing.assert_close(marginals.sum(2), mask.float())


def _reference_log_partition(crf: CRF, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Textbook float64 forward algorithm through autograd: ``[B]`` log Z."""
    start, trans, end = (
        torch.where(allowed, param.double(), torch.tensor(PENALTY, dtype=torch.float64))
        for allowed, param in (
            (crf.allowed_start, crf.start_transitions),
            (crf.allowed_transitions, crf.transitions),
            (crf.allowed_end, crf.end_transitions),
        )
    )
    alpha = start + emissions[:, 0]
    for t in range(1, emissions.size(1)):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]
        alpha = torch.where(mask[:, t, None], nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def test_large_batch_matches_reference() -> None:
    """Sizes big enough for several memory chunks in the backward, against plain autograd."""
    crf = _make_crf(50, constrained=False)
    allowed = torch.rand(50, 50, generator=torch.Generator().manual_seed(5)) > 0.3
    crf.set_constraints(allowed)
    emissions, _, mask = _batch(50, lengths=tuple(range(30, 14, -1)) + (30,) * 16, seed=2)
    assert emissions.shape == (32, 30, 50)  # 32 * 30 * 50 * 50 floats > one 2M chunk
    emissions.requires_grad_(True)
    crf.log_partition(emissions, mask).sum().backward()

    em64 = emissions.detach().double().requires_grad_(True)
    crf64 = _make_crf(50, constrained=False)
    crf64.load_state_dict(crf.state_dict())
    reference = _reference_log_partition(crf64, em64, mask)
    reference.sum().backward()

    torch.testing.assert_close(
        crf.log_partition(emissions, mask).double(), reference.detach(), atol=1e-4, rtol=1e-6
    )
    torch.testing.assert_close(emissions.grad.double(), em64.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        crf.transitions.grad.double(), crf64.transitions.grad.double(), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(crf.marginals(emissions, mask), emissions.grad)


def test_backward_twice_with_retained_graph() -> None:
    """The backward must not consume what the forward saved."""
    crf = _make_crf(4, constrained=True)
    emissions, tags, mask = _batch(4)
    emissions.requires_grad_(True)
    loss = crf(emissions, tags, mask)
    loss.backward(retain_graph=True)
    first = emissions.grad.clone()
    loss.backward()
    torch.testing.assert_close(emissions.grad, 2 * first)


def test_training_lowers_the_loss() -> None:
    crf = _make_crf(4, constrained=False)
    emissions, tags, mask = _batch(4)
    emissions.requires_grad_(True)
    optimiser = torch.optim.SGD([emissions, *crf.parameters()], lr=0.5)
    first = crf(emissions, tags, mask).item()
    for _ in range(50):
        optimiser.zero_grad()
        crf(emissions, tags, mask).backward()
        optimiser.step()
    assert crf(emissions, tags, mask).item() < first / 4
    decoded = crf.decode(emissions, mask)
    assert torch.equal(decoded[mask], tags[mask])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_outputs_are_float32_for_any_emission_dtype(dtype: torch.dtype) -> None:
    crf = _make_crf(4, constrained=False)
    emissions, tags, mask = _batch(4)
    reference = crf(emissions.to(dtype).float(), tags, mask, reduction="none")
    low = emissions.to(dtype).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        nll = crf(low, tags, mask, reduction="none")
        log_z = crf.log_partition(low, mask)
        marginals = crf.marginals(low, mask)
    assert nll.dtype == log_z.dtype == marginals.dtype == torch.float32
    torch.testing.assert_close(nll, reference)
    nll.sum().backward()
    assert low.grad is not None and low.grad.dtype == dtype


def test_non_bool_mask_is_accepted() -> None:
    crf = _make_crf(3, constrained=False)
    emissions, tags, mask = _batch(3)
    torch.testing.assert_close(
        crf(emissions, tags, mask.long(), "none"), crf(emissions, tags, mask, "none")
    )


def test_no_mask_means_every_position_is_real() -> None:
    crf = _make_crf(4, constrained=True)
    emissions, _, full = _batch(4, lengths=(4, 4, 4))
    tags = torch.randint(4, (3, 4), generator=torch.Generator().manual_seed(2))
    assert bool(full.all())
    for reduction in ("none", "sum", "mean", "token_mean"):
        expected = crf(emissions, tags, full, reduction)
        assert torch.equal(crf(emissions, tags, reduction=reduction), expected)
    assert torch.equal(crf.log_partition(emissions), crf.log_partition(emissions, full))
    assert torch.equal(crf.score(emissions, tags), crf.score(emissions, tags, full))
    assert torch.equal(crf.decode(emissions), crf.decode(emissions, full))
    assert torch.equal(crf.marginals(emissions), crf.marginals(emissions, full))
    with pytest.raises(ValueError, match="CRF has num_tags=4"):
        crf.decode(torch.zeros(3, 4, 5))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_viterbi_equals_decode() -> None:
    """TorchScript compiles the decoding recursion; seqtag.integrations.export runs it in its
    graphs."""
    crf = _make_crf(5, constrained=True, seed=3)
    decode = torch.jit.script(viterbi)
    start, transitions, end = crf.constrained_scores()
    gen = torch.Generator().manual_seed(0)
    for batch, length in ((1, 1), (3, 2), (6, 9), (4, 30)):
        emissions = torch.randn(batch, length, 5, generator=gen) * 3
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        mask = torch.arange(length)[None, :] < lengths[:, None]
        expected = crf.decode(emissions, mask).masked_fill(~mask, -1)
        assert torch.equal(decode(emissions, mask, start, transitions, end, -1), expected)


# ---------------------------------------------------------------------- boundary errors


def _inputs(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Valid T=4 inputs with some replaced by broken ones."""
    emissions, tags, mask = _batch(4)
    return {"emissions": emissions, "tags": tags, "mask": mask} | changes


PAD = -100


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (_inputs(emissions=torch.zeros(3, 4)), "emissions must have 3 dimensions"),
        (_inputs(emissions=torch.zeros(3, 4, 5)), "CRF has num_tags=4"),
        (
            _inputs(
                emissions=torch.zeros(3, 0, 4),
                tags=torch.zeros(3, 0, dtype=torch.long),
                mask=torch.zeros(3, 0, dtype=torch.bool),
            ),
            "seq_len 0",
        ),
        (_inputs(mask=torch.ones(3, 5, dtype=torch.bool)), "mask must have shape"),
        (_inputs(mask=torch.ones(4, 3, dtype=torch.bool)), "mask must have shape"),
        (
            _inputs(mask=torch.tensor([[1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 0, 0]]).bool()),
            r"mask\[:, 0\] must be all True .* rows \[1\]",
        ),
        (
            _inputs(mask=torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]]).bool()),
            r"contiguous prefix .* rows \[1\]",
        ),
    ],
)
def test_boundary_errors(inputs: dict[str, torch.Tensor], message: str) -> None:
    """Every public method checks emissions and mask the same way."""
    crf = CRF(4)
    with pytest.raises(ValueError, match=message):
        crf(**inputs)
    with pytest.raises(ValueError, match=message):
        crf.score(**inputs)
    for method in (crf.log_partition, crf.decode, crf.marginals):
        with pytest.raises(ValueError, match=message):
            method(inputs["emissions"], inputs["mask"])


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (torch.zeros(3, 3, dtype=torch.long), "tags must have shape"),
        (torch.zeros(3, 4), "tags must be an integer tensor"),
        (
            torch.tensor([[0, 1, 2, 3], [0, 4, PAD, PAD], [0, PAD, PAD, PAD]]),
            r"tags on unmasked positions must be in \[0, 4\), got values \[4\]",
        ),
        (
            torch.tensor([[0, PAD, 2, 3], [0, 1, PAD, PAD], [0, PAD, PAD, PAD]]),
            r"got values \[-100\]",
        ),
    ],
)
def test_tag_errors(tags: torch.Tensor, message: str) -> None:
    crf = CRF(4)
    inputs = _inputs(tags=tags)
    with pytest.raises(ValueError, match=message):
        crf(**inputs)
    with pytest.raises(ValueError, match=message):
        crf.score(**inputs)


def test_num_tags_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_tags must be a positive integer"):
        CRF(0)
