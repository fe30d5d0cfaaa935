import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtag.models.encoder import BiRNN, BiRNNEncoder, reversal_index
from seqtag.models.tagger import Tagger


def _copy_into_packed_reference(model: BiRNN, reference: nn.RNNBase) -> None:
    """Give a PyTorch bidirectional RNN the weights of our per-direction layers."""
    with torch.no_grad():
        for layer, (fw, bw) in enumerate(
            zip(model.forward_layers, model.backward_layers, strict=True)
        ):
            for name, value in fw.named_parameters():
                getattr(reference, name.replace("l0", f"l{layer}")).copy_(value)
            for name, value in bw.named_parameters():
                getattr(reference, name.replace("l0", f"l{layer}") + "_reverse").copy_(value)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_birnn_equals_packed_bidirectional_rnn(rnn_type, num_layers):
    torch.manual_seed(0)
    model = BiRNN(5, 7, num_layers, rnn_type).eval()
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[rnn_type]
    reference = cls(5, 7, num_layers=num_layers, batch_first=True, bidirectional=True).eval()
    _copy_into_packed_reference(model, reference)
    inputs = torch.randn(4, 6, 5)
    lengths = torch.tensor([6, 3, 1, 5])
    ours = model(inputs, lengths)
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True)
    for row, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(ours[row, :length], expected[row, :length])


def test_reversal_index_reverses_within_length_and_is_an_involution():
    index = reversal_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]
    assert index.gather(1, index).tolist() == [[0, 1, 2, 3]] * 3


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    encoder = BiRNNEncoder(50, 8, hidden_size=6, dropout=0.0).eval()
    words = torch.tensor([[5, 6, 7]])
    alone = encoder(words, torch.tensor([3]))
    padded = encoder(torch.tensor([[5, 6, 7, 0, 0], [9, 9, 9, 9, 9]]), torch.tensor([3, 5]))
    torch.testing.assert_close(padded[0, :3], alone[0])
    assert padded[0, 3:].abs().sum() == 0


def test_word_dropout_only_in_training_and_never_on_padding():
    encoder = BiRNNEncoder(50, 8, hidden_size=6, dropout=0.0, word_dropout=1.0)
    seen = []
    encoder.embeddings.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    words = torch.tensor([[5, 6, 0]])
    encoder.train()(words, torch.tensor([2]))
    assert seen[-1].tolist() == [[1, 1, 0]]
    encoder.eval()(words, torch.tensor([2]))
    assert seen[-1].tolist() == [[5, 6, 0]]


def test_pretrained_matrix_shape_is_checked():
    encoder = BiRNNEncoder(10, 4, hidden_size=3)
    with pytest.raises(ValueError, match="shape"):
        encoder.load_pretrained(torch.zeros(10, 5))
    encoder.load_pretrained(torch.ones(10, 4))
    assert encoder.embeddings.weight.sum() == 40


def test_frozen_embeddings_get_no_gradient():
    encoder = BiRNNEncoder(10, 4, hidden_size=3, freeze_embeddings=True)
    tagger = Tagger(encoder, 3)
    emissions = tagger(torch.tensor([[2, 3]]), torch.tensor([2]))
    tagger.loss(emissions, torch.tensor([[0, 1]]), torch.tensor([[True, True]])).backward()
    assert encoder.embeddings.weight.grad is None
    assert encoder.rnn.forward_layers[0].weight_ih_l0.grad is not None


@pytest.mark.parametrize("decoder", ["softmax", "crf"])
def test_tagger_learns_a_tiny_task(decoder):
    torch.manual_seed(0)
    tagger = Tagger(BiRNNEncoder(6, 8, hidden_size=16, dropout=0.0), 2, decoder)
    words = torch.tensor([[2, 3, 4, 5], [3, 2, 5, 0]])
    lengths = torch.tensor([4, 3])
    mask = torch.arange(4)[None] < lengths[:, None]
    tags = torch.tensor([[0, 1, 0, 1], [1, 0, 1, -100]])
    optimizer = torch.optim.Adam(tagger.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        tagger.loss(tagger(words, lengths), tags, mask).backward()
        optimizer.step()
    best, confidence = tagger.decode(tagger(words, lengths), mask)
    assert (best[mask] == tags[mask]).all()
    assert (confidence[mask] > 0.5).all()


def test_word_dropout_replaces_words_by_their_own_unknown_ids():
    encoder = BiRNNEncoder(num_words=6, embedding_dim=3, hidden_size=2, word_dropout=1.0)
    encoder.set_unknown_ids(torch.tensor([0, 1, 1, 2, 2, 1]))
    seen = []
    encoder.embeddings.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    encoder.train()
    encoder(torch.tensor([[3, 4, 5, 0]]), torch.tensor([3]))
    assert seen[0].tolist() == [[2, 2, 1, 0]]  # padding stays padding
    with pytest.raises(ValueError, match="unknown_ids has shape"):
        encoder.set_unknown_ids(torch.tensor([1, 1]))


@pytest.mark.parametrize("module", ["birnn", "encoder", "tagger"])
def test_lengths_as_tensor_list_or_none(module):
    torch.manual_seed(0)
    encoder = BiRNNEncoder(20, 6, hidden_size=5, num_layers=2, dropout=0.0).eval()
    tagger = Tagger(encoder, 3)
    words = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0], [3, 0, 0, 0]])
    features = torch.randn(3, 4, 6)
    run = {
        "birnn": lambda lengths: encoder.rnn(features, lengths),
        "encoder": lambda lengths: encoder(words, lengths),
        "tagger": lambda lengths: tagger(words, lengths),
    }[module]
    with torch.no_grad():
        expected = run(torch.tensor([4, 2, 1]))
        assert torch.equal(run([4, 2, 1]), expected)
        assert torch.equal(run(None), run(torch.tensor([4, 4, 4])))
        assert torch.equal(run(None), run([4, 4, 4]))
    for lengths, message in [
        (torch.tensor([4, 2]), r"lengths must have shape \[batch\] = \(3,\)"),
        ([[4], [2], [1]], "lengths must have shape"),
        (torch.tensor([4, 0, 1]), r"lengths must be in \[1, seq_len=4\], got \[0\]"),
        ([5, 2, 1], r"in \[1, seq_len=4\], got \[5\]"),
        ([4.0, 2.0, 1.0], "lengths must hold integers"),
        (torch.tensor([True, True, True]), "lengths must hold integers"),
        (["4", "2", "1"], "lengths must be a list of ints or an int tensor"),
    ]:
        with pytest.raises(ValueError, match=message):
            run(lengths)


def test_inputs_of_the_wrong_rank_are_refused():
    encoder = BiRNNEncoder(20, 6, hidden_size=5)
    with pytest.raises(ValueError, match=r"words must have shape \[batch, seq_len\]"):
        encoder(torch.tensor([4, 5, 6]))
    with pytest.raises(ValueError, match=r"inputs must have shape \[batch, seq_len, features\]"):
        encoder.rnn(torch.zeros(3, 6))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_scripted_run_equals_forward(rnn_type):
    """TorchScript compiles BiRNN.run (seqtag.integrations.export calls it), dropout included."""
    torch.manual_seed(0)
    model = BiRNN(5, 7, num_layers=2, rnn_type=rnn_type, dropout=0.3).eval()
    scripted = torch.jit.script(model)
    inputs, lengths = torch.randn(4, 6, 5), torch.tensor([6, 3, 1, 5])
    with torch.no_grad():
        torch.testing.assert_close(scripted.run(inputs, lengths), model(inputs, lengths))
