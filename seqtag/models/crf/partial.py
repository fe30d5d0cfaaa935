"""Losses for partially annotated sentences (missing or ambiguous gold tags).

A position's gold annotation is a set of tags, given as an ``allowed`` ``[B, L, T]`` bool tensor:
one ``True`` for a known tag, all ``True`` for a missing one, several for an ambiguous one
(``{B-X, S-X}`` when only the chunk's start is known). The loss is the negative log of the
probability of the set of tag sequences that agree with every position's set, so a sentence
with nothing known costs exactly 0 and a fully known one costs its ordinary NLL.

With a CRF that probability is ``Z_allowed / Z``, where ``Z_allowed`` is the forward algorithm
over the emissions with every disallowed tag scored :attr:`CRF.FORBIDDEN_SCORE`: the same
:class:`~seqtag.models.crf.layer._LogPartition`, hence the same fast backward. With a softmax it is
a product over tokens of the summed probability of each token's allowed tags.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqtag.models.crf.layer import (
    CRF,
    Reduction,
    Temperature,
    _check_reduction,
    _no_autocast,
    _reduce,
    _scaled,
)


def check_allowed(allowed: Tensor, shape: tuple[int, ...], real: Tensor) -> Tensor:
    """Return ``allowed`` as bool, or raise if its shape is wrong or a real token allows no tag.

    A real position with no allowed tag would make the loss infinite (softmax) or a huge
    penalty (CRF) without saying why; padding positions may hold anything.
    """
    if tuple(allowed.shape) != tuple(shape):
        raise ValueError(
            f"allowed must have shape [batch, seq_len, num_tags] = {tuple(shape)} like "
            f"emissions, got {tuple(allowed.shape)}"
        )
    if allowed.is_floating_point() or allowed.is_complex():
        raise ValueError(f"allowed must be a bool tensor, got dtype {allowed.dtype}")
    allowed = allowed.bool()
    empty = real & ~allowed.any(dim=2)  # [B, L]
    if bool(empty.any()):
        where = empty.nonzero()[:5].tolist()
        raise ValueError(
            f"allowed has no tag at real positions [batch, position] {where}: every real "
            "token needs at least one allowed tag (all True for an unknown tag)"
        )
    return allowed


def partial_nll(
    crf: CRF,
    emissions: Tensor,
    allowed: Tensor,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    temperature: Temperature = None,
) -> Tensor:
    """``log Z - log Z_allowed`` per sentence: minus the log-probability of the allowed paths.

    Args:
        crf: the CRF whose scores (and constraints) define the distribution.
        emissions: ``[B, L, T]`` tag scores.
        allowed: ``[B, L, T]`` bool, the tags each real position may have; ignored on padding.
        mask: ``[B, L]`` bool, ``True`` on real tokens; ``None``: every position is real.
        reduction: as in :meth:`CRF.forward` (``token_mean`` divides by all real tokens,
            known or not, like the ordinary loss).
        temperature: divides every score, as in :meth:`CRF.forward`.

    Returns:
        Float32 loss, a scalar or ``[B]``. One-hot ``allowed`` gives :meth:`CRF.forward`'s
        value; all ``True`` gives 0.
    """
    _check_reduction(reduction)
    emissions, mask, _ = crf._validate(emissions, mask)
    allowed = check_allowed(allowed.to(emissions.device), emissions.shape, mask)
    with _no_autocast(emissions):
        emissions = _scaled(emissions, temperature)
        start, trans, end = crf.constrained_scores(temperature)
        log_z = crf._log_partition(emissions, mask, start, trans, end)
        kept = emissions.masked_fill(~allowed, crf.FORBIDDEN_SCORE)
        log_z_allowed = crf._log_partition(kept, mask, start, trans, end)
    return _reduce(log_z - log_z_allowed, mask, reduction)


def softmax_partial_nll(
    emissions: Tensor, allowed: Tensor, real: Tensor, temperature: Temperature = None
) -> Tensor:
    """Mean over informative tokens of ``-log(sum of the allowed tags' softmax probabilities)``.

    ``real`` ``[B, L]`` bool marks the tokens to score. A token that allows every tag carries
    no information: it costs exactly 0 and is left out of the mean's denominator, so
    unannotated text does not dilute the loss; a batch without any annotation gives 0.
    """
    scores = _scaled(emissions.float(), temperature)
    allowed = check_allowed(allowed.to(scores.device), scores.shape, real)
    allowed = allowed | ~real.unsqueeze(2)  # padding: all allowed, so no -inf anywhere
    counted = real & ~allowed.all(dim=2)  # [B, L]
    kept = scores.masked_fill(~allowed, float("-inf"))
    per_token = torch.logsumexp(scores, dim=2) - torch.logsumexp(kept, dim=2)
    total = torch.where(counted, per_token, 0.0).sum()
    return total / counted.sum().clamp(min=1)


def softmax_nll(emissions: Tensor, tags: Tensor, temperature: Temperature = None) -> Tensor:
    """Cross-entropy averaged over tokens whose tag is not negative (padding, unseen tags)."""
    targets = tags.masked_fill(tags < 0, -100).flatten()
    scores = _scaled(emissions.flatten(0, 1).float(), temperature)
    return F.cross_entropy(scores, targets, ignore_index=-100)
