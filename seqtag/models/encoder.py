"""Word (and character) embeddings followed by a bidirectional RNN; a plain ``nn.Module``.

The backward direction runs over each sentence reversed *within its own length*, so it starts
at the sentence's last real word and padding never reaches a real token's state. This gives the
same result as ``pack_padded_sequence`` but ran 1.5x faster on a 2-core CPU (see
``benchmarks/``): packing splits every time step into a differently sized matrix product, while
length-bucketed batches waste only a few percent on padding.

Every ``forward`` here takes ``lengths`` as an int tensor ``[B]``, a list of ints, or ``None``
(every sentence fills all ``T`` positions), and checks it (see :func:`lengths_tensor`).
:meth:`BiRNN.run` is the recurrence alone, on checked lengths; TorchScript compiles it, and
:mod:`seqtag.integrations.export` calls it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seqtag.models.dropout import FastMaskDropout

RNNType = Literal["lstm", "gru", "rnn"]
#: Sentence lengths: an int tensor [B], a list of ints, or None for "every row is full".
Lengths = Tensor | list[int] | None
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
        word_dropout: during training, the probability of replacing any word by the unknown
            id; see :meth:`set_rare_word_dropout` for a probability that favours rare words.
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
        self.rnn = BiRNN(input_dim, hidden_size, num_layers, rnn_type, dropout)
        self.dropout = FastMaskDropout(dropout)
        self.word_dropout = word_dropout
        # Per-word probability of becoming unknown in training (see set_rare_word_dropout).
        self.register_buffer("unknown_probability", torch.zeros(num_words))
        # What each word becomes when dropped: the unknown id, or its shape's unknown id.
        self.register_buffer(
            "unknown_ids", torch.full((num_words,), unk_id, dtype=torch.long), persistent=False
        )
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.output_dim = 2 * hidden_size

    def set_rare_word_dropout(self, counts: Tensor, alpha: float) -> None:
        """Replace word ``w`` by the unknown id with probability ``alpha / (alpha + count(w))``.

        Words unseen at test time are mostly rare words (names, nouns, adjectives), so the
        unknown row should learn from rare words rather than from all words alike
        (Kiperwasser and Goldberg 2016). ``counts`` [num_words] are training frequencies.
        """
        counts = counts.to(self.unknown_probability)
        probability = alpha / (alpha + counts) if alpha > 0 else torch.zeros_like(counts)
        probability[self.pad_id] = 0.0
        probability[self.unk_id] = 0.0
        self.unknown_probability.copy_(probability)

    def set_unknown_ids(self, unknown_ids: Tensor) -> None:
        """Ids [num_words] that word dropout puts in place of each word.

        With unknown-word shapes (:class:`seqtag.data.vocab.Vocabulary`), a dropped word
        becomes the unknown entry of its own shape, as an unseen word of that spelling would.
        """
        if tuple(unknown_ids.shape) != tuple(self.unknown_ids.shape):
            raise ValueError(
                f"unknown_ids has shape {tuple(unknown_ids.shape)}, expected "
                f"{tuple(self.unknown_ids.shape)}"
            )
        self.unknown_ids.copy_(unknown_ids)

    def load_pretrained(self, matrix: Tensor) -> None:
        """Copy an aligned pretrained matrix [num_words, embedding_dim] into the table."""
        if tuple(matrix.shape) != tuple(self.embeddings.weight.shape):
            raise ValueError(
                f"pretrained matrix has shape {tuple(matrix.shape)}, the embedding table "
                f"{tuple(self.embeddings.weight.shape)}"
            )
        with torch.no_grad():
            self.embeddings.weight.copy_(matrix)

    def forward(
        self, words: Tensor, lengths: Lengths = None, chars: Tensor | None = None
    ) -> Tensor:
        """Encode a padded batch.

        Args:
            words: word ids [B, T].
            lengths: real lengths [B], each in [1, T] (an int tensor on any device, or a list);
                ``None`` means every sentence has all T words.
            chars: character ids [B, T, C], when the encoder has character features.

        Returns:
            Features [B, T, 2 * hidden_size]; rows past a sentence's length are zero.

        Raises:
            ValueError: if ``words`` is not [B, T] or ``lengths`` is not [B] lengths in [1, T].
        """
        if words.dim() != 2:
            raise ValueError(f"words must have shape [batch, seq_len], got {tuple(words.shape)}")
        lengths = lengths_tensor(lengths, words.shape[0], words.shape[1], words.device)
        if self.training:
            probability = self.unknown_probability[words] + self.word_dropout
            drop = torch.rand(words.shape, device=words.device) < probability
            words = torch.where(drop & (words != self.pad_id), self.unknown_ids[words], words)
        features = self.embeddings(words)
        if self.char_encoder is not None:
            if chars is None:
                raise ValueError("this encoder has character features: pass chars [B, T, C]")
            features = torch.cat([features, self.char_encoder(chars)], dim=-1)
        output = self.rnn(self.dropout(features), lengths)
        mask = (
            torch.arange(words.shape[1], device=words.device)[None, :]
            < lengths.to(words.device)[:, None]
        )
        return self.dropout(output * mask.unsqueeze(-1))


def lengths_tensor(
    lengths: Lengths, batch_size: int, max_length: int, device: torch.device
) -> Tensor:
    """``lengths`` as a checked integer tensor [B]; ``None`` gives ``max_length`` for every row.

    A list becomes an int64 tensor on ``device``; a tensor is returned as it is (same device
    and dtype). Checking the values reads them on the host: a sync for an accelerator tensor.

    Raises:
        ValueError: if ``lengths`` is not one integer per row, or a length is outside
            ``[1, max_length]``.
    """
    if lengths is None:
        return torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"lengths must be a list of ints or an int tensor: {err}") from err
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch_size,):
        raise ValueError(
            f"lengths must have shape [batch] = ({batch_size},), got {tuple(lengths.shape)}"
        )
    bad = (lengths < 1) | (lengths > max_length)
    if bool(bad.any()):
        raise ValueError(
            f"lengths must be in [1, seq_len={max_length}], got {lengths[bad][:5].tolist()}"
        )
    return lengths


def reversal_index(lengths: Tensor, max_length: int) -> Tensor:
    """Positions [B, T] that reverse each row within its length and leave padding in place.

    Applying it twice is the identity, so the same index also un-reverses.
    """
    positions = torch.arange(max_length, device=lengths.device)[None, :]
    lengths = lengths[:, None]
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


class BiRNN(nn.Module):
    """A stacked bidirectional RNN over padded batches, exact for variable lengths.

    Args:
        input_size: features per input token.
        hidden_size: units per direction.
        num_layers: stacked layers; each consumes both directions of the one below.
        rnn_type: ``lstm``, ``gru`` or ``rnn``.
        dropout: dropout between layers.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        rnn_type: RNNType = "lstm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        cls = _RNN_CLASSES[rnn_type]
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(cls(n, hidden_size, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(cls(n, hidden_size, batch_first=True) for n in sizes)
        self.dropout = FastMaskDropout(dropout)

    @torch.jit.unused  # TorchScript compiles run(), which takes lengths as a tensor only
    def forward(self, inputs: Tensor, lengths: Lengths = None) -> Tensor:
        """inputs [B, T, input_size], lengths [B] -> outputs [B, T, 2 * hidden_size].

        ``lengths`` is an int tensor or a list, each in [1, T], or ``None`` for all T.
        Outputs at padded positions are unspecified; callers mask them. On the CPU the RNN
        runs in float32 even under autocast: oneDNN has no bfloat16 LSTM kernel for CPUs
        without AVX-512 (bf16-mixed crashed there) and its bfloat16 GRU was 10x slower.
        """
        if inputs.dim() != 3:
            raise ValueError(
                f"inputs must have shape [batch, seq_len, features], got {tuple(inputs.shape)}"
            )
        lengths = lengths_tensor(lengths, inputs.shape[0], inputs.shape[1], inputs.device)
        if inputs.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.run(inputs.float(), lengths)
        return self.run(inputs, lengths)

    @torch.jit.export
    def run(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """The recurrence of :meth:`forward`, on lengths already checked; scriptable."""
        index = reversal_index(lengths.to(inputs.device), inputs.shape[1]).unsqueeze(-1)
        layer_input = inputs
        # No strict=True: TorchScript has no such argument; both lists have num_layers RNNs.
        for depth, (forward_rnn, backward_rnn) in enumerate(
            zip(self.forward_layers, self.backward_layers)  # noqa: B905
        ):
            if depth > 0:
                layer_input = self.dropout(layer_input)
            ahead, _ = forward_rnn(layer_input)
            reversed_input = layer_input.gather(1, index.expand(-1, -1, layer_input.shape[-1]))
            behind, _ = backward_rnn(reversed_input)
            behind = behind.gather(1, index.expand(-1, -1, behind.shape[-1]))
            layer_input = torch.cat([ahead, behind], dim=-1)
        return layer_input
