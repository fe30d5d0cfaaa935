"""The forward algorithm and its hand-written backward: the arithmetic under :class:`CRF`.

Kept apart from the module so that :mod:`seqtag.models.crf.layer` reads as the model and its API,
and
the partial-label and span code (:meth:`~seqtag.models.crf.layer.CRF.partial_nll`,
:mod:`~seqtag.models.crf.spans`) can reuse the same fast ``log Z``. See the docstring of
:mod:`seqtag.models.crf.layer` for why it is written this way (speed, no exp() underflow).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def viterbi(
    emissions: Tensor,
    mask: Tensor,
    start: Tensor,
    transitions: Tensor,
    end: Tensor,
    pad: int = 0,
) -> Tensor:
    """The best tag path ``[B, L]`` (int64) of each sentence, ``pad`` past each length.

    The recursion of :meth:`CRF.decode` on checked inputs. It compiles with ``torch.jit.script``
    (the two loops over time become graph loops), and backpointers and path are filled in
    place rather than gathered in Python lists: lists become ONNX sequences, which onnxruntime's
    graph optimizer mis-handled.

    Args:
        emissions: ``[B, L, T]`` float32 tag scores, ``L >= 1``.
        mask: ``[B, L]`` bool, a prefix of ``True`` in every row (see the module docstring).
        start: ``[T]`` start scores, forbidden starts penalised (:meth:`CRF.constrained_scores`).
        transitions: ``[T, T]`` scores from tag ``i`` (row) to tag ``j``, likewise penalised.
        end: ``[T]`` end scores, likewise penalised.
        pad: the value of padded positions.
    """
    batch, length, num_tags = emissions.size(0), emissions.size(1), emissions.size(2)
    em = emissions.transpose(0, 1)  # [L, B, T]
    steps = mask.transpose(0, 1).unsqueeze(2)  # [L, B, 1]
    trans_to_from = transitions.t().contiguous()  # [to, from]: reduce over the last dim
    identity = torch.arange(num_tags, device=em.device).expand(batch, num_tags)
    score = start + em[0]  # [B, T] best score of a path ending in each tag
    # Backpointers of steps 1..L-1: the best previous tag for each tag.
    history = torch.empty(length - 1, batch, num_tags, dtype=torch.long, device=em.device)
    for t in range(1, length):
        # [B, 1, from] + [to, from] -> best over "from" for each "to"
        best, prev = (score.unsqueeze(1) + trans_to_from).max(dim=2)  # [B, T], [B, T]
        score = torch.where(steps[t], best + em[t], score)
        # On padding, point each tag at itself so backtracking walks through unchanged.
        history[t - 1] = torch.where(steps[t], prev, identity)
    last = (score + end).argmax(dim=1)  # [B]
    path = torch.empty(batch, length, dtype=torch.long, device=em.device)
    path[:, length - 1] = last
    for t in range(length - 1, 0, -1):
        last = history[t - 1].gather(1, last.unsqueeze(1)).squeeze(1)
        path[:, t - 1] = last
    return path.masked_fill(~mask, pad)


# exp() of an argument below about -87 underflows, and on some CPUs (AVX2 here) that takes a
# slow path, 10-70x slower; a forbidden move's -1e4 would hit it at every step. Clamping to
# -80 first is exact to float32 resolution: exp(-80) ~ 2e-35 never shows next to a 1.
EXP_FLOOR = -80.0


def logsumexp_finite(x: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp`` for finite inputs without the underflow slow path; no autograd."""
    top = x.amax(dim=dim, keepdim=True)
    return (x - top).clamp_(min=EXP_FLOOR).exp_().sum(dim).log_().add_(top.squeeze(dim))


def exp_nonpositive(x: Tensor) -> Tensor:
    """``exp(x)`` in place for ``x <= 0`` (max-shifted scores, log-probabilities): ``(0, 1]``.

    Clamps into ``[EXP_FLOOR, 0]`` first, which also bounds rounding just above 0 and
    keeps values on padded positions finite, so masking them by multiplication is NaN-free.
    """
    return x.clamp_(EXP_FLOOR, 0.0).exp_()


def forward_pass(
    em: Tensor, steps: Tensor, start: Tensor, trans: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward algorithm, keeping what the reverse sweep needs.

    ``alpha[t, b, j]`` is the log-sum of the scores of all paths over tokens ``0..t`` that end
    in tag ``j``: ``alpha[t] = logsumexp_i(alpha[t-1, i] + trans[i, :]) + em[t]``.

    Args:
        em: ``[L, B, T]`` emissions, time-major.
        steps: ``[L, B, 1]`` bool mask, time-major.
        start: ``[T]`` start scores.
        trans: ``[T, T]`` transition scores (from, to).

    Returns:
        ``alpha`` ``[L, B, T]`` (on padding the last real value is carried along, so
        ``alpha[-1]`` is each sentence's final one); ``weights`` ``[L-1, B, to, from]``, the
        max-shifted ``exp(alpha[t-1, from] + trans[from, to])`` of step ``t``; and ``sums``
        ``[L-1, B, to]``, their sums over ``from``. ``weights / sums`` is the probability of
        the previous tag given the current one, which is all the backward direction needs:
        keeping it costs ``L*B*T*T`` floats (autograd would keep as much) and saves the
        backward pass every exp().
    """
    length, batch, num_tags = em.shape
    trans_to_from = trans.t().contiguous()  # [to, from]: reduce over the last dim (faster)
    weights = em.new_empty(length - 1, batch, num_tags, num_tags)  # filled in place, no copy
    alpha = [start + em[0]]  # each [B, T]
    sums = []
    for t in range(1, length):
        weight = torch.add(alpha[-1].unsqueeze(1), trans_to_from, out=weights[t - 1])
        top = weight.amax(dim=2, keepdim=True)  # [B, to, 1]
        exp_nonpositive(weight.sub_(top))  # [B, to, from] in (0, 1]
        total = weight.sum(dim=2)  # [B, to] >= 1
        nxt = total.log().add_(top.squeeze(2)).add_(em[t])
        alpha.append(torch.where(steps[t], nxt, alpha[-1]))
        sums.append(total)
    sums_t = torch.stack(sums) if sums else em.new_empty(0, batch, num_tags)
    return torch.stack(alpha), weights, sums_t


def last_tag_probs(alpha: Tensor, end: Tensor) -> Tensor:
    """``[B, T]`` posterior of each sentence's last tag, from ``alpha`` ``[L, B, T]``."""
    last = alpha[-1] + end  # alpha[-1] holds each sentence's last real alpha
    return exp_nonpositive(last - logsumexp_finite(last, dim=1).unsqueeze(1))


def reverse_sweep(
    weights: Tensor,
    sums: Tensor,
    steps: Tensor,
    last: Tensor,
    with_transitions: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Carry per-tag weights from the last token back to the first, in probability space.

    ``weights[t-1] / sums[t-1]`` (from :func:`forward_pass`) is ``P(tag_{t-1} = from |
    tag_t = to, tokens 0..t)``, so ``g[t-1, from] = sum_to P[to, from] * g[t, to]``. Started
    from ``last`` ``[B, T]`` (the last tags' posterior, times per-sentence weights), ``g``
    is at every step the posterior marginal times those weights: both :meth:`CRF.marginals`
    and the gradient of a weighted sum of ``log Z``. Values stay in ``[0, 1]`` and no exp()
    is needed, unlike a log-space backward algorithm.

    Returns:
        ``g`` ``[L, B, T]`` (zero on padding) and, if asked, the summed pairwise marginals
        ``[T, T]`` (from, to): the gradient for the transition scores.
    """
    length = steps.size(0)
    marginals = torch.empty(length, *last.shape, dtype=last.dtype, device=last.device)
    g = last  # [B, T]
    for t in range(length - 1, 0, -1):
        marginals[t] = g * steps[t]
        scaled = (marginals[t] / sums[t - 1]).unsqueeze(1)  # [B, 1, to]
        prev = torch.bmm(scaled, weights[t - 1]).squeeze(1)  # [B, from]
        g = torch.where(steps[t], prev, g)  # padding passes the weights through
    marginals[0] = g
    if not with_transitions:
        return marginals, None
    num_tags = last.size(1)
    grad_trans = last.new_zeros(num_tags * num_tags)  # [to * from]
    if length == 1:
        return marginals, grad_trans.view(num_tags, num_tags)
    scale = marginals[1:] / sums  # [L-1, B, to]; padding rows are 0
    chunk = max(1, (1 << 21) // weights[0].numel())  # steps at a time, to bound temp memory
    for lo in range(0, length - 1, chunk):
        pair = weights[lo : lo + chunk] * scale[lo : lo + chunk].unsqueeze(3)
        grad_trans += pair.view(-1, num_tags * num_tags).sum(0)
    return marginals, grad_trans.view(num_tags, num_tags).t()


class LogPartition(torch.autograd.Function):
    """``log Z`` with a hand-written backward.

    The gradient of ``log Z`` is the posterior marginals, which :func:`reverse_sweep` gets
    from what the forward pass kept, with no exp() and one small matrix product per step.
    Computes in the dtype it is given (float32 from :class:`CRF`; float64 lets ``gradcheck``
    test it). Saves ``L*B*T*T`` floats for the backward, as autograd would.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        emissions: Tensor,  # [B, L, T]
        mask: Tensor,  # [B, L] bool
        start: Tensor,  # [T]
        trans: Tensor,  # [T, T]
        end: Tensor,  # [T]
    ) -> Tensor:
        em = emissions.transpose(0, 1)  # [L, B, T]
        steps = mask.transpose(0, 1).unsqueeze(2)  # [L, B, 1]
        alpha, weights, sums = forward_pass(em, steps, start, trans)
        last = alpha[-1] + end  # [B, T]
        log_z = logsumexp_finite(last, dim=1)  # [B]
        ctx.save_for_backward(mask, weights, sums, exp_nonpositive(last - log_z[:, None]))
        return log_z

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_log_z: Tensor
    ) -> tuple[Tensor | None, ...]:
        mask, weights, sums, last_probs = ctx.saved_tensors
        steps = mask.transpose(0, 1).unsqueeze(2)  # [L, B, 1]
        last = last_probs * grad_log_z.unsqueeze(1)  # [B, T]
        unary, grad_trans = reverse_sweep(
            weights, sums, steps, last, with_transitions=ctx.needs_input_grad[3]
        )
        return unary.transpose(0, 1), None, unary[0].sum(0), grad_trans, last.sum(0)
