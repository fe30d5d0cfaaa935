"""Character-level word features, concatenated with word vectors by the encoder.

Both extractors map a batch of character ids ``[B, T, C]`` (sentences x words x characters)
to one feature vector per word ``[B, T, output_dim]``. They are plain ``nn.Module``s: no
strings, no devices, no Lightning.

Padding convention: ``padding_idx`` (0 by default) marks both padded characters inside a word
and every character of a padded word slot. A word is "real" when it has at least one
non-padding character. Characters of a real word must be left-aligned (padding only at the
end), which is what the collator produces; :class:`CharBiLSTM` relies on it for packing.

Why only real words are computed: a typical batch has many padded word slots (sentences
differ in length) and characters padded to the longest word. Both modules flatten the words
to ``[B*T, C]``, keep the real ones, trim the character axis to the longest real word, run the
network on that ``[N, C']`` block and scatter the results back into zeros. Padded word slots
therefore come out as exact zeros, and a word's features do not depend on how much padding
surrounds it.

Why per word type: a batch repeats its words ("the", ",", "."), so by default
(``per_type=True``) each distinct character row of the ``[N, C']`` block is computed once
(:func:`~seqtag.models.char_cache.unique_rows`) and gathered back to its tokens: about three
times fewer words in a batch of 256 EWT sentences. In evaluation mode this equals the per-token
computation to float rounding (the CNN bit for bit here), and without dropout so do the
gradients. With dropout in training, all occurrences of a spelling in a batch share one dropout
mask on the character embeddings instead of one mask each: dropout per word type within a
batch, as Gal & Ghahramani (2016) drop word types, chosen because per-token masks would undo
the saving during training, where it matters most. ``per_type=False`` restores the per-token
computation (and masks). In evaluation without gradients, a bounded LRU cache
(:class:`~seqtag.models.char_cache.CharFeatureCache`, ``cache_size`` spellings) also keeps
features across batches, checked against the parameters at every call so it is never stale,
and emptied when training starts.

Both modules compile with ``torch.jit.script`` (:mod:`seqtag.integrations.export` scripts them),
the CNN
as it is. Packing has no TorchScript-to-ONNX form, so the scripted BiLSTM runs
:meth:`CharBiLSTM.forward_dense` instead: every word slot, each direction on its own, the
backward one over each word reversed within its length, so that padding never enters the
recurrence; in evaluation mode it agrees with the packed path to float rounding. Scripted
modules compute every real word (CNN) or word slot (BiLSTM), without deduplication or cache.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqtag.models.char_cache import DEFAULT_CACHE_SIZE, PerTypeExtractor
from seqtag.models.dropout import FastMaskDropout
from seqtag.models.encoder import reversal_index

__all__ = ["CharBiLSTM", "CharCNN", "build_char_encoder"]


def _check_sizes(num_chars: int, char_dim: int, dropout: float, padding_idx: int) -> None:
    """Reject impossible constructor arguments with a message that names the argument."""
    if num_chars < 1:
        raise ValueError(f"num_chars must be at least 1, got {num_chars}")
    if char_dim < 1:
        raise ValueError(f"char_dim must be at least 1, got {char_dim}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0 <= padding_idx < num_chars:
        raise ValueError(f"padding_idx must be in [0, num_chars={num_chars}), got {padding_idx}")


def _char_embedding(num_chars: int, char_dim: int, padding_idx: int) -> nn.Embedding:
    """Char embeddings drawn from U(-sqrt(3/dim), sqrt(3/dim)) as in Ma & Hovy (2016).

    The default N(0, 1) gives every character vector a norm of about sqrt(dim), which
    saturates the layers above at the start of training. The padding row stays zero, which
    padding invariance of the convolution relies on (a pad character looks like the conv's own
    zero padding).
    """
    embedding = nn.Embedding(num_chars, char_dim, padding_idx=padding_idx)
    bound = math.sqrt(3.0 / char_dim)
    with torch.no_grad():
        embedding.weight.uniform_(-bound, bound)
        embedding.weight[padding_idx].zero_()
    return embedding


def _check_chars(chars: Tensor) -> None:
    """Reject inputs that are not ``[B, T, C]`` integer ids (in Python; TorchScript types them)."""
    if chars.dim() != 3:
        raise ValueError(f"chars must have shape [batch, words, chars], got {tuple(chars.shape)}")
    if chars.dtype.is_floating_point or chars.dtype.is_complex or chars.dtype == torch.bool:
        raise ValueError(f"chars must hold integer character ids, got dtype {chars.dtype}")


def _select_real_words(chars: Tensor, padding_idx: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten ``chars`` and keep the words with at least one real character.

    Args:
        chars: ``[B, T, C]`` integer character ids.
        padding_idx: the id of padding.

    Returns:
        ``index``: ``[N]`` positions of the real words in the flattened ``[B*T]`` axis;
        ``words``: ``[N, C']`` their character ids, trimmed to ``C'`` = the last real
        character position over all of them (``C' <= C``);
        ``char_mask``: ``[N, C']`` True at real characters.
    """
    flat = chars.reshape(-1, chars.size(-1))  # [B*T, C]
    mask = flat != padding_idx  # [B*T, C]
    index = mask.any(dim=1).nonzero().squeeze(1)  # [N]
    words = flat.index_select(0, index)  # [N, C]
    char_mask = mask.index_select(0, index)  # [N, C]
    if index.numel() > 0:
        # 1-based position of each real character; the max is the trimmed width C'.
        positions = torch.arange(1, flat.size(1) + 1, device=flat.device)
        width = int((char_mask * positions).amax())
        words, char_mask = words[:, :width], char_mask[:, :width]
    return index, words, char_mask


def _scatter_words(features: Tensor, index: Tensor, batch: int, seq_len: int) -> Tensor:
    """Place ``[N, D]`` real-word features at ``index`` in zeros, reshaped to ``[B, T, D]``."""
    out = features.new_zeros(batch * seq_len, features.size(-1))  # [B*T, D]
    return out.index_copy(0, index, features).view(batch, seq_len, -1)


class CharCNN(PerTypeExtractor):
    """Ma & Hovy (2016): char embeddings -> dropout -> 1-D conv -> max over characters.

    The convolution uses "same" padding (1 for the default kernel of 3), so every output
    position is centred on one character. Positions of padding characters are set to -inf
    before the max, so a padding position can never win, even when every real position's
    activation is negative.

    Args:
        num_chars: size of the character vocabulary, padding included.
        char_dim: character embedding size.
        num_filters: number of convolution filters; the output size.
        kernel_size: convolution width in characters.
        dropout: dropout on the character embeddings (0.5 in the paper).
        padding_idx: the character id used for padding.
        per_type: compute each distinct spelling of a batch once (False: every word slot).
        cache_size: distinct spellings whose features are kept between inference batches.
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int = 30,
        num_filters: int = 50,
        kernel_size: int = 3,
        dropout: float = 0.5,
        padding_idx: int = 0,
        per_type: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(per_type, cache_size)
        _check_sizes(num_chars, char_dim, dropout, padding_idx)
        if num_filters < 1:
            raise ValueError(f"num_filters must be at least 1, got {num_filters}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be at least 1, got {kernel_size}")
        self.padding_idx = padding_idx
        self.output_dim: int = num_filters
        self.embedding = _char_embedding(num_chars, char_dim, padding_idx)
        self.dropout = FastMaskDropout(dropout)
        self.conv = nn.Conv1d(char_dim, num_filters, kernel_size, padding="same")

    def forward(self, chars: Tensor) -> Tensor:
        """Map ``chars [B, T, C]`` (int ids) to word features ``[B, T, output_dim]``.

        Padded word slots (all characters are padding) give zeros.
        """
        if not torch.jit.is_scripting():
            _check_chars(chars)
        batch, seq_len = chars.size(0), chars.size(1)
        index, words, char_mask = _select_real_words(chars, self.padding_idx)  # [N], [N, C']
        if index.numel() == 0:
            return self.conv.weight.new_zeros(batch, seq_len, self.output_dim)
        features = self.real_word_features(words, char_mask)  # [N, F]
        return _scatter_words(features, index, batch, seq_len)

    def _features(self, words: Tensor, char_mask: Tensor) -> Tensor:
        """Features ``[N, F]`` of real words ``[N, C']`` with their ``char_mask``."""
        emb = self.dropout(self.embedding(words))  # [N, C', E]
        conv = self._convolve(emb)  # [N, C', F]
        conv = conv.masked_fill(~char_mask.unsqueeze(-1), float("-inf"))  # [N, C', F]
        return conv.amax(dim=1)  # [N, F]; finite: every real word has a real character

    def _convolve(self, emb: Tensor) -> Tensor:
        """``self.conv`` ("same" padding) as one matrix product over shifted copies.

        Equal to ``self.conv(emb.transpose(1, 2)).transpose(1, 2)``, but on the CPU oneDNN
        caches a compiled convolution for every new input shape, and the number of real words
        differs in every batch: its cache grew the resident memory of a CoNLL-2000 training run
        to 2 GB. A matrix product has no such cache, and was as fast here.
        """
        kernel = self.conv.kernel_size[0]
        left = (kernel - 1) // 2
        length = emb.size(1)
        padded = nn.functional.pad(emb, (0, 0, left, kernel - 1 - left))  # [N, C'+k-1, E]
        windows = torch.cat([padded[:, j : j + length] for j in range(kernel)], dim=-1)
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        return nn.functional.linear(windows, weight, self.conv.bias)  # [N, C', F]


class CharBiLSTM(PerTypeExtractor):
    """Lample et al. (2016): char embeddings -> BiLSTM over each word -> final states.

    The word feature is the concatenation of the forward LSTM's state after the last real
    character and the backward LSTM's state after the first one. Words are packed by length,
    so padding characters never enter the recurrence.

    Args:
        num_chars: size of the character vocabulary, padding included.
        char_dim: character embedding size.
        hidden_size: LSTM size per direction; the output size is twice this.
        dropout: dropout on the character embeddings (the paper drops out only after the
            word representation is built, in the encoder; hence the default 0).
        padding_idx: the character id used for padding.
        per_type: compute each distinct spelling of a batch once (False: every word slot).
        cache_size: distinct spellings whose features are kept between inference batches.
    """

    def __init__(
        self,
        num_chars: int,
        char_dim: int = 25,
        hidden_size: int = 25,
        dropout: float = 0.0,
        padding_idx: int = 0,
        per_type: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        super().__init__(per_type, cache_size)
        _check_sizes(num_chars, char_dim, dropout, padding_idx)
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be at least 1, got {hidden_size}")
        self.padding_idx = padding_idx
        self.output_dim: int = 2 * hidden_size
        self.embedding = _char_embedding(num_chars, char_dim, padding_idx)
        self.dropout = FastMaskDropout(dropout)
        self.lstm = nn.LSTM(char_dim, hidden_size, batch_first=True, bidirectional=True)

    def forward(self, chars: Tensor) -> Tensor:
        """Map ``chars [B, T, C]`` (int ids, left-aligned) to ``[B, T, output_dim]``.

        Padded word slots (all characters are padding) give zeros. Compiled by TorchScript,
        this is :meth:`forward_dense`.
        """
        if torch.jit.is_scripting():
            return self.forward_dense(chars)  # packing has no ONNX form
        _check_chars(chars)
        batch, seq_len = chars.size(0), chars.size(1)
        index, words, char_mask = _select_real_words(chars, self.padding_idx)  # [N], [N, C']
        if index.numel() == 0:
            return self.lstm.weight_hh_l0.new_zeros(batch, seq_len, self.output_dim)
        features = self.real_word_features(words, char_mask)  # [N, 2H]
        return _scatter_words(features, index, batch, seq_len)

    def _features(self, words: Tensor, char_mask: Tensor) -> Tensor:
        """Features ``[N, 2H]`` of real words ``[N, C']`` with their ``char_mask`` (packed)."""
        lengths = char_mask.sum(dim=1)  # [N], all >= 1
        emb = self.dropout(self.embedding(words))  # [N, C', E]
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        # h_n: [2, N, H] (forward, backward), already restored to the input order.
        _, (h_n, _) = self.lstm(packed)
        return torch.cat([h_n[0], h_n[1]], dim=-1)  # [N, 2H]

    @torch.jit.export
    def forward_dense(self, chars: Tensor) -> Tensor:
        """:meth:`forward` computed on every word slot without packing: what TorchScript runs.

        Each direction of the LSTM runs on its own: the forward one over the words as they
        are, the backward one over each word reversed within its length (so both read the
        characters before any padding), and each word's state is read at ``length - 1``.
        """
        batch, seq_len, width = chars.size(0), chars.size(1), chars.size(2)
        flat = chars.reshape(batch * seq_len, width)  # [N, C], N = B*T
        lengths = (flat != self.padding_idx).sum(dim=1)  # [N]
        emb = self.dropout(self.embedding(flat))  # [N, C, E]
        index = reversal_index(lengths, width).unsqueeze(2).expand(-1, -1, emb.size(2))
        ahead = self._one_direction(emb, reverse=False)  # [N, C, H]
        behind = self._one_direction(emb.gather(1, index), reverse=True)  # [N, C, H]
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, ahead.size(2))
        features = torch.cat([ahead.gather(1, last), behind.gather(1, last)], dim=2)  # [N, 1, 2H]
        real = (lengths > 0).view(-1, 1, 1)
        features = torch.where(real, features, torch.zeros_like(features))
        return features.reshape(batch, seq_len, self.output_dim)

    def _one_direction(self, inputs: Tensor, reverse: bool) -> Tensor:
        """Outputs [N, C, H] of one direction of ``self.lstm``, run left to right on ``inputs``.

        ``torch.lstm`` is the function ``nn.LSTM`` runs, here given one direction's weights.
        """
        lstm = self.lstm
        if reverse:
            weights = [
                lstm.weight_ih_l0_reverse,
                lstm.weight_hh_l0_reverse,
                lstm.bias_ih_l0_reverse,
                lstm.bias_hh_l0_reverse,
            ]
        else:
            weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
        zeros = inputs.new_zeros(1, inputs.size(0), lstm.hidden_size)
        # (inputs, (h0, c0), weights, has_biases, num_layers, dropout, train, bidirectional,
        # batch_first)
        outputs, _, _ = torch.lstm(
            inputs, [zeros, zeros], weights, True, 1, 0.0, False, False, True
        )
        return outputs


def build_char_encoder(
    kind: Literal["none", "cnn", "lstm"],
    num_chars: int,
    char_dim: int | None = None,
    *,
    num_filters: int = 50,  # CNN only
    kernel_size: int = 3,  # CNN only
    hidden_size: int = 25,  # LSTM only
    dropout: float | None = None,
    padding_idx: int = 0,
) -> CharCNN | CharBiLSTM | None:
    """Build the character feature extractor named by ``kind``, or None for ``"none"``.

    Lets the encoder expose one flat, typed set of options for the CLI. Options after
    ``char_dim`` are keyword-only; each applies to the kinds named below and is ignored by the
    others.

    Args:
        kind: ``"cnn"`` (:class:`CharCNN`), ``"lstm"`` (:class:`CharBiLSTM`) or ``"none"``.
        num_chars: size of the character vocabulary, padding included.
        char_dim: character embedding size; None for the paper's (CNN 30, LSTM 25).
        num_filters: CNN only: convolution filters, its output size.
        kernel_size: CNN only: convolution width in characters.
        hidden_size: LSTM only: units per direction; its output size is twice this.
        dropout: dropout on the character embeddings; None for the paper's (CNN 0.5, LSTM 0).
        padding_idx: the character id of padding (the character vocabulary's pad id).
    """
    if kind == "none":
        return None
    if kind == "cnn":
        return CharCNN(
            num_chars,
            char_dim=30 if char_dim is None else char_dim,
            num_filters=num_filters,
            kernel_size=kernel_size,
            dropout=0.5 if dropout is None else dropout,
            padding_idx=padding_idx,
        )
    if kind == "lstm":
        return CharBiLSTM(
            num_chars,
            char_dim=25 if char_dim is None else char_dim,
            hidden_size=hidden_size,
            dropout=0.0 if dropout is None else dropout,
            padding_idx=padding_idx,
        )
    raise ValueError(f"unknown char encoder kind {kind!r}; choose 'none', 'cnn' or 'lstm'")
