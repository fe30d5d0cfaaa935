"""Losses outside the CRF: token-level softmax, with full or partial annotation.

A position's gold annotation may be a set of tags, given as an ``allowed`` ``[B, L, T]`` bool
tensor: one ``True`` for a known tag, all ``True`` for a missing one, several for an ambiguous
one (``{B-X, S-X}`` when only the chunk's start is known). With a softmax the loss is minus the
log of each token's summed probability of its allowed tags; the CRF's version is
:meth:`~seqtag.models.crf.layer.CRF.partial_nll`. :func:`check_allowed` is the rule both use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqtag.models.crf.common import Temperature, scaled


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


def softmax_partial_nll(
    emissions: Tensor, allowed: Tensor, real: Tensor, temperature: Temperature = None
) -> Tensor:
    """Mean over informative tokens of ``-log(sum of the allowed tags' softmax probabilities)``.

    ``real`` ``[B, L]`` bool marks the tokens to score. A token that allows every tag carries
    no information: it costs exactly 0 and is left out of the mean's denominator, so
    unannotated text does not dilute the loss; a batch without any annotation gives 0.
    """
    scores = scaled(emissions.float(), temperature)
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
    scores = scaled(emissions.flatten(0, 1).float(), temperature)
    return F.cross_entropy(scores, targets, ignore_index=-100)
