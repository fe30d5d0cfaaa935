"""Encoder -> per-token tag scores -> softmax or CRF; a plain ``nn.Module`` on tensors."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from seqtag.models.crf import CRF
from seqtag.models.encoder import BiRNNEncoder, Lengths

Decoder = Literal["softmax", "crf"]


class Tagger(nn.Module):
    """Scores every tag at every position and decodes the best tag sequence.

    Args:
        encoder: the word/character BiRNN encoder.
        num_tags: size of the tag set.
        decoder: ``softmax`` (independent per token) or ``crf`` (best sequence by Viterbi).
    """

    def __init__(self, encoder: BiRNNEncoder, num_tags: int, decoder: Decoder = "softmax") -> None:
        super().__init__()
        if decoder not in ("softmax", "crf"):
            raise ValueError(f"decoder must be 'softmax' or 'crf', got {decoder!r}")
        self.encoder = encoder
        self.emission = nn.Linear(encoder.output_dim, num_tags)
        self.crf = CRF(num_tags) if decoder == "crf" else None
        self.num_tags = num_tags

    def forward(
        self, words: Tensor, lengths: Lengths = None, chars: Tensor | None = None
    ) -> Tensor:
        """Tag scores (emissions) [B, T, num_tags].

        ``lengths`` [B] (int tensor or list, each in [1, T]; ``None`` for all T) and ``chars``
        are as in :meth:`BiRNNEncoder.forward`, which checks them.
        """
        return self.emission(self.encoder(words, lengths, chars))

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean loss per sentence-token; targets below 0 (padding, unseen tags) are ignored.

        ``mask`` [B, T] (``None``: every position is real) is the CRF's; softmax ignores it.
        """
        if self.crf is None:
            targets = tags.masked_fill(tags < 0, -100).flatten()
            return F.cross_entropy(emissions.flatten(0, 1).float(), targets, ignore_index=-100)
        # Unseen gold tags only occur in evaluation; score them as the first tag so the loss is
        # defined (the metrics count them as errors independently of the loss).
        return self.crf(emissions, tags.clamp(min=0), mask, reduction="token_mean")

    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Best tag ids [B, T] and the probability of each chosen tag [B, T].

        With softmax the probability is the softmax output; with a CRF it is the posterior
        marginal of the chosen tag at that position (0 where ``mask`` is False). ``mask``
        [B, T] is used by the CRF only; ``None`` means every position is real.
        """
        if self.crf is None:
            probabilities = emissions.float().softmax(dim=-1)
            confidence, best = probabilities.max(dim=-1)
            return best, confidence
        best = self.crf.decode(emissions, mask)
        marginals = self.crf.marginals(emissions, mask)
        confidence = marginals.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        return best, confidence if mask is None else confidence * mask

    def predict(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Best tag ids only (cheaper than :meth:`decode` with a CRF); ``mask`` as there."""
        if self.crf is None:
            return emissions.argmax(dim=-1)
        return self.crf.decode(emissions, mask)
