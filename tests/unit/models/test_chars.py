"""Tests for the character-level word feature extractors in ``seqtag.models.chars``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from seqtag.models.chars import CharBiLSTM, CharCNN, build_char_encoder

NUM_CHARS = 40

Factory = Callable[[], nn.Module]
FACTORIES: dict[str, Factory] = {
    "cnn": lambda: CharCNN(NUM_CHARS),
    "lstm": lambda: CharBiLSTM(NUM_CHARS),
}


@pytest.fixture(params=sorted(FACTORIES))
def model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    return FACTORIES[request.param]()


def random_words(lengths: list[int], generator: torch.Generator) -> list[Tensor]:
    """One ``[L]`` tensor of non-padding character ids per word."""
    return [torch.randint(1, NUM_CHARS, (n,), generator=generator) for n in lengths]


def pad_batch(sentences: list[list[Tensor]], num_words: int, num_chars: int) -> Tensor:
    """Left-align words into a zero-padded ``[B, num_words, num_chars]`` id tensor."""
    chars = torch.zeros(len(sentences), num_words, num_chars, dtype=torch.long)
    for b, words in enumerate(sentences):
        for t, word in enumerate(words):
            chars[b, t, : word.numel()] = word
    return chars


def test_output_shapes(model: nn.Module) -> None:
    chars = torch.randint(0, NUM_CHARS, (3, 7, 9))
    out = model(chars)
    assert out.shape == (3, 7, model.output_dim)
    assert out.dtype == torch.float32


def test_output_dims() -> None:
    assert CharCNN(NUM_CHARS, num_filters=17).output_dim == 17
    assert CharBiLSTM(NUM_CHARS, hidden_size=11).output_dim == 22


def test_padding_invariance(model: nn.Module) -> None:
    """A word's features do not depend on char padding, word padding or batch neighbours."""
    gen = torch.Generator().manual_seed(1)
    words = random_words([3, 1, 7, 5], gen)
    other = random_words([2, 9, 4, 6, 1, 8], gen)
    model.eval()
    with torch.no_grad():
        tight = model(pad_batch([words], num_words=4, num_chars=10))  # [1, 4, D]
        loose = model(pad_batch([other, words], num_words=9, num_chars=20))  # [2, 9, D]
    torch.testing.assert_close(loose[1, :4], tight[0])
    assert torch.count_nonzero(loose[1, 4:]) == 0


@pytest.mark.parametrize("train", [False, True])
def test_padded_word_slots_are_zero(model: nn.Module, train: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    chars = pad_batch(
        [random_words([4, 2], gen), random_words([5, 1, 3, 6], gen), []],
        num_words=5,
        num_chars=8,
    )
    model.train(train)
    out = model(chars)  # [3, 5, D]
    is_word = (chars != 0).any(dim=-1)  # [3, 5]
    assert torch.count_nonzero(out[~is_word]) == 0
    assert bool((out[is_word] != 0).any(dim=-1).all())


def test_all_padding_batch_gives_zeros(model: nn.Module) -> None:
    out = model(torch.zeros(2, 3, 4, dtype=torch.long))
    assert out.shape == (2, 3, model.output_dim)
    assert torch.count_nonzero(out) == 0
    assert model(torch.zeros(0, 3, 4, dtype=torch.long)).shape == (0, 3, model.output_dim)


def test_cnn_max_ignores_padding() -> None:
    """When every real position is negative, a padding position (0 here) must not win."""
    cnn = CharCNN(NUM_CHARS, char_dim=4, num_filters=3, dropout=0.0)
    with torch.no_grad():
        cnn.embedding.weight[1:].fill_(1.0)  # real chars: positive embeddings
        cnn.conv.weight.fill_(-1.0)  # so every window touching a real char is negative
        cnn.conv.bias.zero_()  # and an all-padding window gives exactly 0
    # The long word keeps the char axis wide, so the short word has pad-only windows.
    chars = torch.tensor([[[1, 2, 0, 0, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3]]])
    out = cnn(chars)  # [1, 2, 3]
    # Best real position of "12": its window [pad, 1, 2] or [1, 2, pad] sums to -2 * 4 = -8.
    torch.testing.assert_close(out[0, 0], torch.full((3,), -8.0))
    assert bool((out < 0).all())


def test_cnn_matches_unpadded_convolution() -> None:
    """Oracle: conv over the word alone (zero padding at its edges), then max."""
    torch.manual_seed(3)
    cnn = CharCNN(NUM_CHARS, kernel_size=5).eval()
    gen = torch.Generator().manual_seed(3)
    words = random_words([1, 2, 6, 11], gen)
    with torch.no_grad():
        out = cnn(pad_batch([words], num_words=6, num_chars=14))  # [1, 6, F]
        for t, word in enumerate(words):
            emb = cnn.embedding(word).T.unsqueeze(0)  # [1, E, L]
            expected = cnn.conv(emb).amax(dim=2)[0]  # [F]
            torch.testing.assert_close(out[0, t], expected)


def test_bilstm_matches_unpadded_lstm() -> None:
    """Oracle: run the module's own LSTM on each word alone and compare final states."""
    torch.manual_seed(4)
    lstm = CharBiLSTM(NUM_CHARS, hidden_size=8).eval()
    gen = torch.Generator().manual_seed(4)
    sentences = [random_words([5, 1, 9], gen), random_words([2, 12, 3, 7], gen)]
    with torch.no_grad():
        out = lstm(pad_batch(sentences, num_words=5, num_chars=15))  # [2, 5, 16]
        for b, words in enumerate(sentences):
            for t, word in enumerate(words):
                emb = lstm.embedding(word).unsqueeze(0)  # [1, L, E]
                outputs, (h_n, _) = lstm.lstm(emb)  # outputs [1, L, 2H]; h_n [2, 1, H]
                expected = torch.cat([h_n[0, 0], h_n[1, 0]])  # [2H]
                torch.testing.assert_close(out[b, t], expected)
                # Same thing read off the outputs: forward at the end, backward at the start.
                torch.testing.assert_close(
                    expected, torch.cat([outputs[0, -1, :8], outputs[0, 0, 8:]])
                )


def test_gradients_flow(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(5)
    chars = pad_batch([random_words([3, 4], gen), random_words([6], gen)], 3, 7)
    model(chars).square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) > 0, name
    embedding_grad = model.embedding.weight.grad
    assert torch.count_nonzero(embedding_grad[0]) == 0  # the padding row never learns
    used = chars.unique()[1:]
    assert bool((embedding_grad[used] != 0).any(dim=1).all())


def test_build_char_encoder() -> None:
    assert build_char_encoder("none", NUM_CHARS) is None
    cnn = build_char_encoder("cnn", NUM_CHARS, num_filters=20)
    assert isinstance(cnn, CharCNN)
    assert (cnn.output_dim, cnn.embedding.embedding_dim, cnn.dropout.p) == (20, 30, 0.5)
    lstm = build_char_encoder("lstm", NUM_CHARS, char_dim=10, hidden_size=7, dropout=0.25)
    assert isinstance(lstm, CharBiLSTM)
    assert (lstm.output_dim, lstm.embedding.embedding_dim, lstm.dropout.p) == (14, 10, 0.25)
    with pytest.raises(ValueError, match="unknown char encoder kind"):
        build_char_encoder("gru", NUM_CHARS)  # type: ignore[arg-type]


def test_build_char_encoder_options_apply_to_their_own_kind() -> None:
    """One flat set of options: the CNN reads num_filters, the LSTM hidden_size."""
    options = dict(num_filters=20, hidden_size=7, padding_idx=3)
    cnn = build_char_encoder("cnn", NUM_CHARS, **options)
    lstm = build_char_encoder("lstm", NUM_CHARS, **options)
    assert (cnn.output_dim, lstm.output_dim) == (20, 14)
    assert cnn.padding_idx == lstm.padding_idx == cnn.embedding.padding_idx == 3
    with pytest.raises(TypeError):
        build_char_encoder("cnn", NUM_CHARS, 30, 20)  # type: ignore[misc]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("kind", ["cnn", "lstm"])
@pytest.mark.parametrize("padding_idx", [0, 5])
def test_scripted_module_equals_forward(kind: str, padding_idx: int) -> None:
    """What seqtag.integrations.export compiles: the CNN as it is, the BiLSTM's forward_dense (no
    packing)."""
    torch.manual_seed(7)
    cls = CharCNN if kind == "cnn" else CharBiLSTM
    model = cls(NUM_CHARS, padding_idx=padding_idx).eval()
    gen = torch.Generator().manual_seed(7)
    chars = torch.full((3, 6, 9), padding_idx, dtype=torch.long)
    for b, count in enumerate([6, 2, 0]):  # the last sentence is all padding
        for t in range(count):
            n = int(torch.randint(1, 10, (1,), generator=gen))
            word = torch.randint(0, NUM_CHARS - 1, (n,), generator=gen)
            chars[b, t, :n] = word + (word >= padding_idx).long()  # never the padding id
    scripted = torch.jit.script(model)
    with torch.no_grad():
        expected = model(chars)
        torch.testing.assert_close(scripted(chars), expected)
        if kind == "lstm":
            torch.testing.assert_close(model.forward_dense(chars), expected)
        got = scripted(chars)
    assert torch.count_nonzero(got[0].abs().sum(-1)) == 6
    assert torch.count_nonzero(got[1:, 2:]) == torch.count_nonzero(got[2]) == 0
    assert torch.count_nonzero(scripted(torch.full((2, 3, 4), padding_idx))) == 0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: CharCNN(0), "num_chars"),
        (lambda: CharCNN(NUM_CHARS, char_dim=0), "char_dim"),
        (lambda: CharCNN(NUM_CHARS, num_filters=0), "num_filters"),
        (lambda: CharCNN(NUM_CHARS, kernel_size=0), "kernel_size"),
        (lambda: CharCNN(NUM_CHARS, dropout=1.0), "dropout"),
        (lambda: CharBiLSTM(NUM_CHARS, hidden_size=0), "hidden_size"),
        (lambda: CharBiLSTM(NUM_CHARS, padding_idx=NUM_CHARS), "padding_idx"),
    ],
)
def test_constructor_rejects_bad_arguments(factory: Factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_forward_rejects_bad_input(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="shape"):
        model(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.ones(2, 3, 4))


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4, 5])
def test_char_cnn_matrix_product_equals_the_convolution(kernel_size):
    torch.manual_seed(kernel_size)
    cnn = CharCNN(num_chars=20, char_dim=7, num_filters=9, kernel_size=kernel_size)
    embedded = torch.randn(11, 6, 7)
    expected = cnn.conv(embedded.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(cnn._convolve(embedded), expected)
