"""Linear-chain conditional random field on tensors.

A plain :class:`torch.nn.Module`: it knows nothing of strings, devices or Lightning. The
tagger feeds it emission scores and gets back a loss (negative log-likelihood), the Viterbi
path, or posterior marginals (for confidences).

Shape names used throughout: ``B`` batch size, ``L`` padded sequence length, ``T`` number of
tags. Inputs are batch first. A ``mask`` is a ``[B, L]`` bool tensor that is ``True`` on real
tokens; every row must be a contiguous prefix (left-aligned padding) and start with ``True``,
so each sentence has at least one token. ``mask=None`` means every position is real.

All scores are computed in float32, even under autocast, because the forward algorithm sums
``L`` terms in log space and half precision loses the small differences that matter.

Constraints (for example "``I-PER`` may not follow ``O``" in BIO) are bool masks kept as
persistent buffers, so they travel in checkpoints. A forbidden transition scores
:attr:`CRF.FORBIDDEN_SCORE` (a large negative number, not ``-inf``, so gradients stay finite
and a sentence whose gold path breaks a constraint gets a huge but finite loss, with a
bounded gradient) in the likelihood and in decoding alike.

Speed (this runs in every training step): everything is batched over sentences and only
time steps are looped over. ``log Z`` has a hand-written backward that reuses the forward
pass's softmax weights, so it needs no exp() and no log-space recursion of its own; and every
exp() is clamped away from the underflow range, which some CPUs handle on a very slow path
(every forbidden transition would hit it). Both together measured 1.2-1.6x faster than plain
autograd without constraints and 1.3-3x with them (CPU, B=32, L=40-100, T=17-50).

The recursions themselves live in :mod:`seqtag.models.crf.algorithms`: its ``viterbi``,
written for ``torch.jit.script``, is what :meth:`CRF.decode` calls and what the
TorchScript/ONNX graph of :mod:`seqtag.integrations.export` runs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqtag.models.crf.algorithms import (
    LogPartition,
    forward_pass,
    last_tag_probs,
    reverse_sweep,
    viterbi,
)
from seqtag.models.crf.common import (
    Reduction,
    Temperature,
    as_bool_mask,
    check_reduction,
    float32_only,
    reduce_losses,
    scaled,
)
from seqtag.models.losses import check_allowed


class CRF(nn.Module):
    """Linear-chain CRF with start/end scores and optional transition constraints.

    Args:
        num_tags: Number of tags ``T``; tag ids are ``0 .. T-1``.

    Attributes:
        transitions: ``[T, T]`` score of moving from tag ``i`` (row) to tag ``j`` (column).
        start_transitions: ``[T]`` score of starting a sentence with each tag.
        end_transitions: ``[T]`` score of ending a sentence with each tag.
        allowed_transitions: ``[T, T]`` bool buffer, ``True`` where ``i -> j`` is allowed.
        allowed_start: ``[T]`` bool buffer, ``True`` where a sentence may start with the tag.
        allowed_end: ``[T]`` bool buffer, ``True`` where a sentence may end with the tag.
    """

    FORBIDDEN_SCORE = -1e4
    """Score given to a forbidden transition: far below any learned score, yet finite."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be a positive integer, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.register_buffer(
            "allowed_transitions", torch.ones(num_tags, num_tags, dtype=torch.bool), persistent=True
        )
        self.register_buffer(
            "allowed_start", torch.ones(num_tags, dtype=torch.bool), persistent=True
        )
        self.register_buffer("allowed_end", torch.ones(num_tags, dtype=torch.bool), persistent=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small uniform scores so no transition is preferred before training."""
        nn.init.uniform_(self.transitions, -0.1, 0.1)
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # ------------------------------------------------------------------ constraints

    def set_constraints(
        self,
        allowed: Tensor | list[list[bool]],
        allowed_start: Tensor | list[bool] | None = None,
        allowed_end: Tensor | list[bool] | None = None,
    ) -> None:
        """Forbid transitions that the tag scheme rules out (e.g. ``O -> I-PER`` in BIO).

        Args:
            allowed: ``[T, T]`` bool, ``allowed[i, j]`` says whether tag ``j`` may follow ``i``.
            allowed_start: ``[T]`` bool, tags a sentence may start with; ``None`` allows all.
            allowed_end: ``[T]`` bool, tags a sentence may end with; ``None`` allows all.

        Raises:
            ValueError: If a shape is wrong, or no tag may start or end a sentence.
        """
        t = self.num_tags
        device = self.allowed_transitions.device
        allowed_t = as_bool_mask(allowed, "allowed", (t, t), device)
        start_t = (
            torch.ones(t, dtype=torch.bool, device=device)
            if allowed_start is None
            else as_bool_mask(allowed_start, "allowed_start", (t,), device)
        )
        end_t = (
            torch.ones(t, dtype=torch.bool, device=device)
            if allowed_end is None
            else as_bool_mask(allowed_end, "allowed_end", (t,), device)
        )
        if not bool(start_t.any()):
            raise ValueError("allowed_start forbids every tag: no sentence could be tagged")
        if not bool(end_t.any()):
            raise ValueError("allowed_end forbids every tag: no sentence could be tagged")
        self.allowed_transitions.copy_(allowed_t)
        self.allowed_start.copy_(start_t)
        self.allowed_end.copy_(end_t)

    def constrained_scores(self, temperature: Temperature = None) -> tuple[Tensor, Tensor, Tensor]:
        """Float32 ``(start [T], transitions [T, T], end [T])`` with forbidden moves penalised.

        What every computation here uses in place of the raw parameters. A ``temperature``
        divides the learned scores but not the penalty, so a forbidden move stays forbidden
        however hot the distribution is made.
        """
        penalty = self.FORBIDDEN_SCORE
        start = scaled(self.start_transitions.float(), temperature)
        trans = scaled(self.transitions.float(), temperature)
        end = scaled(self.end_transitions.float(), temperature)
        start = start.masked_fill(~self.allowed_start, penalty)
        trans = trans.masked_fill(~self.allowed_transitions, penalty)
        end = end.masked_fill(~self.allowed_end, penalty)
        return start, trans, end

    # ------------------------------------------------------------------ public API

    def forward(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        reduction: Reduction = "mean",
        temperature: Temperature = None,
    ) -> Tensor:
        """Negative log-likelihood of ``tags``: the loss to minimise.

        Args:
            emissions: ``[B, L, T]`` unnormalised per-token tag scores (any float dtype).
            tags: ``[B, L]`` integer gold tags; padded positions may hold anything (e.g. -100).
            mask: ``[B, L]`` bool, ``True`` on real tokens (left-aligned, first column on);
                ``None`` means every position is real.
            reduction: ``"none"`` gives ``[B]``; ``"sum"`` sums over sentences; ``"mean"``
                averages over sentences; ``"token_mean"`` divides the sum by the token count.
            temperature: positive scalar (float or tensor, which then gets a gradient) that
                divides every score, for calibration; ``None`` leaves them as they are.

        Returns:
            Float32 loss: a scalar, or ``[B]`` for ``reduction="none"``.
        """
        check_reduction(reduction)
        emissions, mask, tags = self.check_inputs(emissions, mask, tags)
        with float32_only(emissions):
            emissions = scaled(emissions, temperature)
            start, trans, end = self.constrained_scores(temperature)
            nll = self.log_partition_with(
                emissions, mask, start, trans, end
            ) - self.path_score_with(emissions, tags, mask, start, trans, end)  # [B]
        return reduce_losses(nll, mask, reduction)

    def partial_nll(
        self,
        emissions: Tensor,
        allowed: Tensor,
        mask: Tensor | None = None,
        reduction: Reduction = "mean",
        temperature: Temperature = None,
    ) -> Tensor:
        """Loss for partial annotation: ``log Z - log Z_allowed``, minus the log-probability of
        the tag paths that agree with every position's set of allowed tags.

        ``Z_allowed`` is the forward algorithm over the emissions with every disallowed tag
        scored :attr:`FORBIDDEN_SCORE`, hence the same fast backward as ``log Z``. A sentence
        with nothing known costs exactly 0; one-hot ``allowed`` gives :meth:`forward`'s value.

        Args:
            emissions: ``[B, L, T]`` tag scores.
            allowed: ``[B, L, T]`` bool, the tags each real position may have (all ``True``
                for an unknown tag); ignored on padding.
            mask: ``[B, L]`` bool, ``True`` on real tokens; ``None``: every position is real.
            reduction: as in :meth:`forward` (``token_mean`` divides by all real tokens).
            temperature: divides every score, as in :meth:`forward`.
        """
        check_reduction(reduction)
        emissions, mask, _ = self.check_inputs(emissions, mask)
        allowed = check_allowed(allowed.to(emissions.device), emissions.shape, mask)
        with float32_only(emissions):
            emissions = scaled(emissions, temperature)
            start, trans, end = self.constrained_scores(temperature)
            log_z = self.log_partition_with(emissions, mask, start, trans, end)
            kept = emissions.masked_fill(~allowed, self.FORBIDDEN_SCORE)
            log_z_allowed = self.log_partition_with(kept, mask, start, trans, end)
        return reduce_losses(log_z - log_z_allowed, mask, reduction)

    def log_partition(
        self, emissions: Tensor, mask: Tensor | None = None, temperature: Temperature = None
    ) -> Tensor:
        """Log of the summed exp-score of every tag path, ``log Z``: ``[B]`` float32."""
        emissions, mask, _ = self.check_inputs(emissions, mask)
        with float32_only(emissions):
            emissions = scaled(emissions, temperature)
            return self.log_partition_with(emissions, mask, *self.constrained_scores(temperature))

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Unnormalised score of the path ``tags`` (padded positions ignored): ``[B]`` float32."""
        emissions, mask, tags = self.check_inputs(emissions, mask, tags)
        with float32_only(emissions):
            return self.path_score_with(emissions, tags, mask, *self.constrained_scores())

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Viterbi: the highest-scoring tag path of each sentence.

        Args:
            emissions: ``[B, L, T]`` tag scores.
            mask: ``[B, L]`` bool, ``True`` on real tokens; ``None``: every position is real.

        Returns:
            ``[B, L]`` int64 tag ids; padded positions hold 0 (read them through ``mask``).
        """
        emissions, mask, _ = self.check_inputs(emissions, mask)
        with float32_only(emissions):
            return viterbi(emissions, mask, *self.constrained_scores())

    @torch.no_grad()
    def marginals(
        self, emissions: Tensor, mask: Tensor | None = None, temperature: Temperature = None
    ) -> Tensor:
        """Posterior ``P(tag_t = j | sentence)``, e.g. for confidences.

        Args:
            emissions: ``[B, L, T]`` tag scores.
            mask: ``[B, L]`` bool, ``True`` on real tokens; ``None``: every position is real.
            temperature: divides every score (calibrated confidences); ``None``: no scaling.

        Returns:
            ``[B, L, T]`` float32 probabilities; each real token's row sums to 1, padded rows
            are 0.
        """
        emissions, mask, _ = self.check_inputs(emissions, mask)
        with float32_only(emissions):
            start, trans, end = self.constrained_scores(temperature)
            em = scaled(emissions, temperature).transpose(0, 1)  # [L, B, T]
            steps = mask.transpose(0, 1).unsqueeze(2)  # [L, B, 1]
            alpha, weights, sums = forward_pass(em, steps, start, trans)
            last = last_tag_probs(alpha, end)  # [B, T]
            probs, _ = reverse_sweep(weights, sums, steps, last, with_transitions=False)
            return probs.transpose(0, 1).contiguous()  # [B, L, T], zero on padding

    # ------------------------------------------------------------------ internals

    def check_inputs(
        self, emissions: Tensor, mask: Tensor | None, tags: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Check shapes and mask layout; return float32 emissions, bool mask, int64 tags.

        A ``None`` mask becomes all True. The value checks (mask layout, tag range) share a
        single host sync.
        """
        if emissions.dim() != 3:
            raise ValueError(
                f"emissions must have 3 dimensions [batch, seq_len, num_tags], "
                f"got shape {tuple(emissions.shape)}"
            )
        batch, length, num_tags = emissions.shape
        if num_tags != self.num_tags:
            raise ValueError(
                f"emissions have {num_tags} tag scores in the last dimension, "
                f"but the CRF has num_tags={self.num_tags}"
            )
        if length == 0:
            raise ValueError("emissions have seq_len 0: every sentence needs at least one token")
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=emissions.device)
        if mask.shape != (batch, length):
            raise ValueError(
                f"mask must have shape [batch, seq_len] = {(batch, length)} like emissions, "
                f"got {tuple(mask.shape)}"
            )
        if tags is not None:
            if tags.shape != (batch, length):
                raise ValueError(
                    f"tags must have shape [batch, seq_len] = {(batch, length)} like emissions, "
                    f"got {tuple(tags.shape)}"
                )
            if tags.is_floating_point() or tags.is_complex() or tags.dtype == torch.bool:
                raise ValueError(f"tags must be an integer tensor, got dtype {tags.dtype}")
        if mask.dtype != torch.bool:
            mask = mask.bool()

        first_off = ~mask[:, 0]  # [B]
        gap = mask[:, 1:] & ~mask[:, :-1]  # [B, L-1] a real token after padding
        problems = first_off.any() | gap.any()
        if tags is not None:
            tags = tags.long()
            out_of_range = ((tags < 0) | (tags >= self.num_tags)) & mask
            problems = problems | out_of_range.any()
        if bool(problems):  # the one sync
            if bool(first_off.any()):
                rows = first_off.nonzero().flatten().tolist()[:5]
                raise ValueError(
                    f"mask[:, 0] must be all True (every sentence needs a first token); "
                    f"it is False in batch rows {rows}"
                )
            if bool(gap.any()):
                rows = gap.any(dim=1).nonzero().flatten().tolist()[:5]
                raise ValueError(
                    f"mask rows must be a contiguous prefix of True (left-aligned padding); "
                    f"batch rows {rows} have a True after a False"
                )
            bad = tags[out_of_range][:5].tolist() if tags is not None else []
            raise ValueError(
                f"tags on unmasked positions must be in [0, {self.num_tags}), got values {bad}"
            )
        if tags is not None:
            tags = tags.masked_fill(~mask, 0)  # padding may hold -100 etc.; make it indexable
        return emissions.float(), mask, tags

    def log_partition_with(
        self, emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor
    ) -> Tensor:
        """Forward algorithm on validated inputs: ``[B]`` log Z."""
        return LogPartition.apply(emissions, mask, start, trans, end)

    def path_score_with(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor,
        start: Tensor,
        trans: Tensor,
        end: Tensor,
    ) -> Tensor:
        """Score of the path ``tags`` on validated inputs: ``[B]``."""
        # torch.where, not a multiplication, so that inf on padding cannot turn into NaN
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # [B, L]
        emit = torch.where(mask, emit, 0.0)
        moves = torch.where(mask[:, 1:], trans[tags[:, :-1], tags[:, 1:]], 0.0)  # [B, L-1]
        lengths = mask.sum(dim=1)  # [B]
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # [B]
        return start[tags[:, 0]] + emit.sum(dim=1) + moves.sum(dim=1) + end[last]
