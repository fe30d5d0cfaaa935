"""Word (and character) embeddings followed by a bidirectional RNN; a plain ``nn.Module``.

Sentences are packed before the RNN, so the backward direction starts at each sentence's own
last word and padding never leaks into a real token's state.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RNNType = Literal["lstm", "gru", "rnn"]
_RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class BiRNNEncoder(nn.Module):
    """Embeds word ids (plus optional character features) and runs a BiRNN over them.

    Args:
        num_words: rows of the word embedding table (padding is row ``pad_id``).
        embedding_dim: width of the word embeddings.
        hidden_size: RNN units per direction; the output has ``2 * hidden_size`` features.
        num_layers: stacked RNN layers.
        rnn_type: ``lstm``, ``gru`` or ``rnn`` (tanh).
        dropout: dropout on the embeddings, between RNN layers and on the output.
        word_dropout: during training, the probability of replacing a word by the unknown id,
            so the unknown row learns to stand for rare and unseen words.
        char_encoder: a module mapping char ids [B, T, C] to features [B, T, D] with an
            ``output_dim`` attribute (see :mod:`seqtag.models.chars`), or ``None``.
        freeze_embeddings: keep the (pretrained) word embeddings fixed.
        pad_id: id of padding in the word vocabulary.
        unk_id: id of the unknown word.
    """

    def __init__(
        self,
        num_words: int,
        embedding_dim: int = 100,
        hidden_size: int = 256,
        num_layers: int = 1,
        rnn_type: RNNType = "lstm",
        dropout: float = 0.5,
        word_dropout: float = 0.0,
        char_encoder: nn.Module | None = None,
        freeze_embeddings: bool = False,
        pad_id: int = 0,
        unk_id: int = 1,
    ) -> None:
        super().__init__()
        if rnn_type not in _RNN_CLASSES:
            raise ValueError(f"rnn_type must be one of {sorted(_RNN_CLASSES)}, got {rnn_type!r}")
        self.embeddings = nn.Embedding(num_words, embedding_dim, padding_idx=pad_id)
        self.embeddings.weight.requires_grad_(not freeze_embeddings)
        self.char_encoder = char_encoder
        input_dim = embedding_dim + (char_encoder.output_dim if char_encoder is not None else 0)
        self.rnn = _RNN_CLASSES[rnn_type](
            input_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = word_dropout
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.output_dim = 2 * hidden_size

    def load_pretrained(self, matrix: Tensor) -> None:
        """Copy an aligned pretrained matrix [num_words, embedding_dim] into the table."""
        if tuple(matrix.shape) != tuple(self.embeddings.weight.shape):
            raise ValueError(
                f"pretrained matrix has shape {tuple(matrix.shape)}, the embedding table "
                f"{tuple(self.embeddings.weight.shape)}"
            )
        with torch.no_grad():
            self.embeddings.weight.copy_(matrix)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        """Encode a padded batch.

        Args:
            words: word ids [B, T].
            lengths: real lengths [B] (any device; moved to the CPU for packing).
            chars: character ids [B, T, C], when the encoder has character features.

        Returns:
            Features [B, T, 2 * hidden_size]; rows past a sentence's length are zero.
        """
        if self.training and self.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.word_dropout
            words = words.masked_fill(drop & (words != self.pad_id), self.unk_id)
        features = self.embeddings(words)
        if self.char_encoder is not None:
            if chars is None:
                raise ValueError("this encoder has character features: pass chars [B, T, C]")
            features = torch.cat([features, self.char_encoder(chars)], dim=-1)
        features = self.dropout(features)
        packed = pack_padded_sequence(
            features, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=words.shape[1])
        return self.dropout(output)
