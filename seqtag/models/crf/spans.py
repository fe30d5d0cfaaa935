"""Confidence of whole chunks (spans) and of whole sentences, for CRF and softmax taggers.

A per-token confidence says little about a chunk: ``B-PER I-PER`` may be sure of each tag's
type yet unsure where the chunk ends. :func:`crf_span_marginals` gives the exact posterior
probability that the tag sequence, read the way :func:`seqtag.data.schemes.get_spans` reads
it (conlleval's rules), contains a given chunk with exactly that start, end and type.

Under conlleval's rules (the same in every scheme once ``S-`` reads as ``B-`` and ``E-`` as
``I-``), a sequence contains the chunk ``(X, s, e)`` exactly when

- the tag at ``s`` has type ``X`` and opens a chunk: it is ``B-X``/``S-X`` (always opens), or
  ``I-X``/``E-X`` after a tag that is not of type ``X`` (or at the sentence start);
- every tag in ``s+1 .. e-1`` is ``I-X`` or ``E-X`` (continues the chunk);
- the tag at ``e``, if the sentence goes on, is not ``I-X``/``E-X`` (the chunk ends there).

Splitting on the first condition's two cases makes each one a set of allowed tags per
position, with no constraint on pairs of tags. So the probability is a sum of two constrained
partition functions over ``Z``, each a forward pass over emissions with the disallowed tags
scored :attr:`CRF.FORBIDDEN_SCORE` (the code of :meth:`CRF.log_partition`), batched over all
the requested spans at once. The string work (which tag opens or continues which type) is done
once per tag set by :class:`SpanTags`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from seqtag.data.schemes import Span, TagScheme, normalize_scheme, split_in_scheme
from seqtag.errors import TagSchemeError
from seqtag.models.crf.common import Temperature, float32_only, scaled
from seqtag.models.crf.layer import CRF


class SpanTags:
    """Which tag ids open or continue a chunk of each type, for one tag set and scheme.

    Args:
        tags: the tag strings, in tag-id order.
        scheme: ``iob1``, ``iob2`` or ``bioes`` (aliases accepted).

    Attributes:
        types: the chunk types, in order of first appearance; a span's type is an index here.
        opens: ``[K, T]`` bool, the tags that open a chunk of type ``k`` whatever precedes
            them (``B-k``, ``S-k``).
        continues: ``[K, T]`` bool, the tags that continue a chunk of type ``k`` after a tag of
            that type and open one otherwise (``I-k``, ``E-k``).

    Tags that are not valid in the scheme (none should be) count as ``O``.
    """

    def __init__(self, tags: Sequence[str], scheme: TagScheme | str) -> None:
        self.scheme = normalize_scheme(scheme)
        self.tags = tuple(tags)
        parsed: list[tuple[str, str | None]] = []
        for tag in self.tags:
            try:
                parsed.append(split_in_scheme(tag, self.scheme))
            except TagSchemeError:
                parsed.append(("O", None))
        self.types: tuple[str, ...] = tuple(dict.fromkeys(t for _, t in parsed if t is not None))
        self._index = {name: k for k, name in enumerate(self.types)}
        self.opens = torch.zeros(len(self.types), len(self.tags), dtype=torch.bool)
        self.continues = torch.zeros_like(self.opens)
        for j, (prefix, type_) in enumerate(parsed):
            if type_ is not None:
                table = self.opens if prefix in ("B", "S") else self.continues
                table[self._index[type_], j] = True

    def type_id(self, type_: str) -> int:
        """Index of a chunk type in :attr:`types`; ``KeyError`` naming it if unknown."""
        try:
            return self._index[type_]
        except KeyError:
            raise KeyError(f"chunk type {type_!r} is not in the tag set {self.types}") from None

    def encode(
        self, spans: Iterable[tuple[int, Span]], device: torch.device | str | None = None
    ) -> Tensor:
        """``[N, 4]`` int64 rows ``(batch row, start, end, type id)`` from ``(row, span)`` pairs.

        ``span`` is ``(type, start, end_exclusive)`` as :func:`get_spans` returns it.
        """
        rows = [(b, start, end, self.type_id(type_)) for b, (type_, start, end) in spans]
        return torch.tensor(rows, dtype=torch.long, device=device).view(-1, 4)


def crf_span_marginals(
    crf: CRF,
    emissions: Tensor,
    mask: Tensor | None,
    spans: Tensor,
    span_tags: SpanTags,
    temperature: Temperature = None,
    chunk_size: int = 256,
) -> Tensor:
    """Exact posterior probability that each span is one of its sentence's chunks.

    Args:
        crf: the CRF (with its constraints) whose distribution is read.
        emissions: ``[B, L, T]`` tag scores, the tags being ``span_tags.tags``.
        mask: ``[B, L]`` bool, ``True`` on real tokens; ``None``: every position is real.
        spans: ``[N, 4]`` int rows ``(batch row, start, end exclusive, type id)``
            (:meth:`SpanTags.encode`); ``0 <= start < end <= length`` of the row.
        span_tags: what the tags mean (:class:`SpanTags` of the CRF's tag set and scheme).
        temperature: divides every score, as in :meth:`CRF.forward`.
        chunk_size: spans per forward pass, which keeps ``2 * chunk_size * L * T * T`` floats.

    Returns:
        ``[N]`` float32 probabilities. The spans with one start and type but different ends
        are exclusive events, so their probabilities sum to at most 1.
    """
    emissions, mask, _ = crf.check_inputs(emissions, mask)
    spans = _check_spans(spans, mask, span_tags, emissions.size(2))
    if len(spans) == 0:
        return emissions.new_zeros(0)
    out = []
    with float32_only(emissions):
        em = scaled(emissions, temperature)
        start, trans, end = crf.constrained_scores(temperature)
        log_z = crf.log_partition_with(em, mask, start, trans, end)  # [B]
        for chunk in spans.split(chunk_size):
            rows = chunk[:, 0].repeat(2)  # both cases of every span
            allowed = _span_allowed(chunk, em.size(1), span_tags)
            kept = em[rows].masked_fill(~allowed, crf.FORBIDDEN_SCORE)
            both = crf.log_partition_with(kept, mask[rows], start, trans, end).view(2, -1)
            out.append(torch.logsumexp(both, dim=0) - log_z[chunk[:, 0]])
    return torch.cat(out).exp().clamp(max=1.0)


def softmax_span_confidence(
    emissions: Tensor,
    spans: Tensor,
    span_tags: SpanTags,
    mask: Tensor | None = None,
    temperature: Temperature = None,
    boundaries: bool = False,
) -> Tensor:
    """Span confidence of a softmax tagger: a product of per-token probabilities.

    An approximation: the product, over the span's tokens, of the probability that the token
    has a tag the span needs there (a tag of its type at the start, one that continues it
    after), ignoring the boundary tokens (whether the previous token would absorb an ``I-``
    start into its own chunk, and whether the next one continues the chunk). Both are usually
    near certain for a span the model predicts. ``boundaries=True`` includes them, which gives
    the exact probability of the span if tokens are tagged independently from their softmax.

    Args as in :func:`crf_span_marginals`; returns ``[N]`` float32.
    """
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be [batch, seq_len, num_tags], got {emissions.shape}")
    batch, length, num_tags = emissions.shape
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool, device=emissions.device)
    spans = _check_spans(spans, mask.bool(), span_tags, num_tags)
    probs = scaled(emissions.float(), temperature).softmax(dim=2)[spans[:, 0]]  # [N, L, T]
    b, s, e, k = spans.unbind(1)
    opens = span_tags.opens.to(probs.device)[k].unsqueeze(2).to(probs.dtype)  # [N, T, 1]
    goes_on = span_tags.continues.to(probs.device)[k].unsqueeze(2).to(probs.dtype)
    p_open = torch.bmm(probs, opens).squeeze(2)  # [N, L]
    p_cont = torch.bmm(probs, goes_on).squeeze(2)
    p_type = p_open + p_cont
    pos = torch.arange(length, device=probs.device).unsqueeze(0)  # [1, L]
    at_start = pos == s.unsqueeze(1)
    inside = (pos > s.unsqueeze(1)) & (pos < e.unsqueeze(1))
    first = p_type
    if boundaries:  # an I- start needs a previous token not of the type
        before = torch.cat([p_type.new_zeros(len(spans), 1), p_type[:, :-1]], dim=1)
        first = p_open + p_cont * (1.0 - before)
    factor = torch.where(at_start, first, torch.where(inside, p_cont, 1.0))
    if boundaries:  # and a next token, if any, that does not continue the chunk
        after = (pos == e.unsqueeze(1)) & mask.bool()[b]
        factor = torch.where(after, 1.0 - p_cont, factor)
    return factor.clamp(0.0, 1.0).prod(dim=1)


def span_confidence(
    crf: CRF | None,
    emissions: Tensor,
    mask: Tensor | None,
    spans: Tensor,
    span_tags: SpanTags,
    temperature: Temperature = None,
) -> Tensor:
    """Probability of each span [N]: exact with a CRF (:func:`crf_span_marginals`), the
    per-token product with softmax (``crf=None``, :func:`softmax_span_confidence`)."""
    if crf is None:
        return softmax_span_confidence(emissions, spans, span_tags, mask, temperature)
    return crf_span_marginals(crf, emissions, mask, spans, span_tags, temperature)


def best_path_probability(
    crf: CRF | None,
    emissions: Tensor,
    mask: Tensor | None = None,
    temperature: Temperature = None,
) -> Tensor:
    """Probability of each sentence's predicted tag sequence, ``[B]`` float32.

    For choosing the sentences the model is least sure about (uncertainty ``1 - p``). With a
    CRF, ``exp(score(Viterbi path) - log Z)``: the path is the one :meth:`CRF.decode` gives
    (a positive temperature does not change it). With a softmax (``crf=None``) the product of
    each real token's highest probability, the probability of the argmax sequence.
    """
    if crf is None:
        log_probs = scaled(emissions.float(), temperature).log_softmax(dim=2)
        best = log_probs.amax(dim=2)  # [B, L]
        if mask is not None:
            best = torch.where(mask.bool(), best, 0.0)
        return best.sum(dim=1).exp()
    path = crf.decode(emissions, mask)
    emissions, mask, _ = crf.check_inputs(emissions, mask)
    with float32_only(emissions):
        em = scaled(emissions, temperature)
        start, trans, end = crf.constrained_scores(temperature)
        log_z = crf.log_partition_with(em, mask, start, trans, end)
        score = crf.path_score_with(em, path, mask, start, trans, end)
    return (score - log_z).exp().clamp(max=1.0)


def _check_spans(spans: Tensor, mask: Tensor, span_tags: SpanTags, num_tags: int) -> Tensor:
    """``spans`` as ``[N, 4]`` int64 on the mask's device, or a ValueError naming a bad row."""
    if num_tags != len(span_tags.tags):
        raise ValueError(f"emissions score {num_tags} tags but span_tags has {len(span_tags.tags)}")
    if spans.dim() != 2 or spans.size(1) != 4:
        raise ValueError(f"spans must have shape [N, 4], got {tuple(spans.shape)}")
    if spans.is_floating_point() or spans.is_complex() or spans.dtype == torch.bool:
        raise ValueError(f"spans must be an integer tensor, got dtype {spans.dtype}")
    spans = spans.to(device=mask.device, dtype=torch.long)
    b, s, e, k = spans.unbind(1)
    row_ok = (b >= 0) & (b < mask.size(0))
    lengths = mask.sum(dim=1)[b.clamp(0, mask.size(0) - 1)]
    bad = ~row_ok | (s < 0) | (e <= s) | (e > lengths) | (k < 0) | (k >= len(span_tags.types))
    if bool(bad.any()):
        row = spans[bad][0].tolist()
        raise ValueError(
            f"span (batch row, start, end, type id) {row} is not a span of a sentence: needs "
            f"0 <= row < {mask.size(0)}, 0 <= start < end <= the row's length, "
            f"0 <= type id < {len(span_tags.types)}"
        )
    return spans


def _span_allowed(spans: Tensor, length: int, span_tags: SpanTags) -> Tensor:
    """``[2N, L, T]`` allowed tags of the two cases of each span (see the module docstring).

    Rows ``0..N-1``: the start opens the chunk by itself (``B-``/``S-``). Rows ``N..2N-1``:
    the start is ``I-``/``E-`` and the previous tag, if any, is not of the span's type.
    """
    _, s, e, k = (column.unsqueeze(1) for column in spans.unbind(1))  # each [N, 1]
    device = spans.device
    opens = span_tags.opens.to(device)[k.squeeze(1)].unsqueeze(1)  # [N, 1, T]
    goes_on = span_tags.continues.to(device)[k.squeeze(1)].unsqueeze(1)
    pos = torch.arange(length, device=device).unsqueeze(0)  # [1, L]

    def at(where: Tensor) -> Tensor:
        return where.unsqueeze(2)  # [N, L, 1]

    common = torch.where(at((pos > s) & (pos < e)), goes_on, True)
    common = common & torch.where(at(pos == e), ~goes_on, True)  # padding there is ignored
    by_itself = common & torch.where(at(pos == s), opens, True)
    after_other = common & torch.where(at(pos == s), goes_on, True)
    after_other = after_other & torch.where(at(pos == s - 1), ~(opens | goes_on), True)
    return torch.cat([by_itself, after_other])
