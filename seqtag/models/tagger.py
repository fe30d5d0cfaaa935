"""Encoder -> per-token tag scores -> softmax or CRF; a plain ``nn.Module`` on tensors."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from seqtag.models.crf.layer import CRF, Temperature
from seqtag.models.crf.spans import (
    SpanTags,
    best_path_probability,
    span_confidence,
)
from seqtag.models.encoder import BiRNNEncoder, Lengths
from seqtag.models.losses import softmax_nll, softmax_partial_nll

Decoder = Literal["softmax", "crf"]


class Tagger(nn.Module):
    """Scores every tag at every position and decodes the best tag sequence.

    Args:
        encoder: the word/character BiRNN encoder.
        num_tags: size of the tag set.
        decoder: ``softmax`` (independent per token) or ``crf`` (best sequence by Viterbi).

    Attributes:
        temperature: float32 scalar buffer (saved in checkpoints, 1 by default) that divides
            every score before confidences are computed, set by calibration. It never changes
            the predicted tags, nor the training loss.
    """

    def __init__(self, encoder: BiRNNEncoder, num_tags: int, decoder: Decoder = "softmax") -> None:
        super().__init__()
        if decoder not in ("softmax", "crf"):
            raise ValueError(f"decoder must be 'softmax' or 'crf', got {decoder!r}")
        self.encoder = encoder
        self.emission = nn.Linear(encoder.output_dim, num_tags)
        self.crf = CRF(num_tags) if decoder == "crf" else None
        self.num_tags = num_tags
        self.register_buffer("temperature", torch.tensor(1.0), persistent=True)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints from before calibration have no temperature: they are uncalibrated (1).
        state_dict.setdefault(prefix + "temperature", torch.ones_like(self.temperature))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(
        self, words: Tensor, lengths: Lengths = None, chars: Tensor | None = None
    ) -> Tensor:
        """Tag scores (emissions) [B, T, num_tags].

        ``lengths`` [B] (int tensor or list, each in [1, T]; ``None`` for all T) and ``chars``
        are as in :meth:`BiRNNEncoder.forward`, which checks them.
        """
        return self.emission(self.encoder(words, lengths, chars))

    def loss(
        self,
        emissions: Tensor,
        tags: Tensor,
        mask: Tensor | None = None,
        allowed: Tensor | None = None,
        temperature: Temperature = None,
    ) -> Tensor:
        """Mean loss per sentence-token; targets below 0 (padding, unseen tags) are ignored.

        ``mask`` [B, T] (``None``: every position is real) is the CRF's; softmax ignores it
        unless ``allowed`` is given.

        ``allowed`` [B, T, num_tags] bool trains from incomplete annotation: the tags each
        position may have (one for a known tag, all for a missing one, several for an
        ambiguous one); ``tags`` is then unused except, with softmax and no ``mask``, to mark
        padding (below 0). The loss is minus the log-probability of the agreeing tag
        sequences (:meth:`~seqtag.models.crf.layer.CRF.partial_nll`): with a CRF averaged over
        the real tokens like the ordinary loss, with softmax over the tokens that are not fully
        unknown.

        ``temperature`` (a tensor gets a gradient) divides every score, for calibrating
        :attr:`temperature` on held-out data; ``None`` (training) leaves them unscaled.
        """
        if self.crf is None:
            if allowed is None:
                return softmax_nll(emissions, tags, temperature)
            real = tags >= 0 if mask is None else mask.bool()
            return softmax_partial_nll(emissions, allowed, real, temperature)
        if allowed is not None:
            return self.crf.partial_nll(emissions, allowed, mask, "token_mean", temperature)
        # Unseen gold tags only occur in evaluation; score them as the first tag so the loss is
        # defined (the metrics count them as errors independently of the loss).
        return self.crf(emissions, tags.clamp(min=0), mask, "token_mean", temperature)

    def token_probabilities(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Calibrated probability of every tag at every position [B, T, num_tags].

        Softmax outputs, or with a CRF the posterior marginals, after dividing the scores by
        :attr:`temperature`. Rows where ``mask`` is False are 0.
        """
        if self.crf is not None:
            return self.crf.marginals(emissions, mask, temperature=self.temperature)
        probabilities = (emissions.float() / self.temperature).softmax(dim=-1)
        return probabilities if mask is None else probabilities * mask.unsqueeze(-1)

    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Best tag ids [B, T] and the probability of each chosen tag [B, T].

        With softmax the probability is the softmax output; with a CRF it is the posterior
        marginal of the chosen tag at that position (0 where ``mask`` is False). Both use
        :attr:`temperature`, which does not change the best tags. ``mask`` [B, T] is used by
        the CRF only; ``None`` means every position is real.
        """
        if self.crf is None:
            best = emissions.float().softmax(dim=-1).argmax(dim=-1)  # as the exported model
            probabilities = self.token_probabilities(emissions)
        else:
            best = self.crf.decode(emissions, mask)
            probabilities = self.token_probabilities(emissions, mask)
        confidence = probabilities.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        return best, confidence if mask is None or self.crf is None else confidence * mask

    def predict(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Best tag ids only (cheaper than :meth:`decode` with a CRF); ``mask`` as there."""
        if self.crf is None:
            return emissions.argmax(dim=-1)
        return self.crf.decode(emissions, mask)

    def span_confidence(
        self, emissions: Tensor, mask: Tensor | None, spans: Tensor, span_tags: SpanTags
    ) -> Tensor:
        """Calibrated probability of each span [N] (rows ``(batch row, start, end, type)``).

        Exact with a CRF, a per-token product with softmax
        (:func:`~seqtag.models.crf.spans.span_confidence`).
        """
        return span_confidence(self.crf, emissions, mask, spans, span_tags, self.temperature)

    def best_path_probability(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Calibrated probability of each sentence's predicted tags [B]; 1 minus it ranks
        sentences by uncertainty (:func:`best_path_probability`)."""
        return best_path_probability(self.crf, emissions, mask, self.temperature)
