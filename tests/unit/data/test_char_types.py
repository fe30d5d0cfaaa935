"""Character features per word type (``per_type``) and the type cache across batches.

The per-token path (``per_type=False``) is the reference: per-type results must equal it in
evaluation mode, and so must the gradients in training without dropout.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from seqtag.models import char_cache
from seqtag.models.char_cache import CharFeatureCache, PerTypeExtractor, unique_rows
from seqtag.models.chars import CharBiLSTM, CharCNN

NUM_CHARS = 30

Factory = Callable[..., PerTypeExtractor]
FACTORIES: dict[str, Factory] = {
    "cnn": lambda **kw: CharCNN(NUM_CHARS, num_filters=16, **kw),
    "lstm": lambda **kw: CharBiLSTM(NUM_CHARS, hidden_size=8, **kw),
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


def make(factory: Factory, seed: int = 0, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    """A per-type module and a per-token copy with the same parameters."""
    torch.manual_seed(seed)
    per_type = factory(**kwargs)
    per_token = copy.deepcopy(per_type)
    per_token.per_type = False
    return per_type, per_token


def text_batch(seed: int, batch: int = 6, words: int = 9, width: int = 12) -> Tensor:
    """``[B, T, C]`` ids drawn from a small lexicon (so words repeat), variable lengths.

    Sentences have different lengths (padded word slots) and one sentence is empty.
    """
    gen = torch.Generator().manual_seed(seed)
    lexicon = [
        torch.randint(1, NUM_CHARS, (int(torch.randint(1, width - 2, (1,), generator=gen)),))
        for _ in range(12)
    ]
    chars = torch.zeros(batch, words, width, dtype=torch.long)
    for b in range(batch - 1):  # the last sentence is all padding
        for t in range(int(torch.randint(1, words + 1, (1,), generator=gen))):
            word = lexicon[int(torch.randint(len(lexicon), (1,), generator=gen))]
            chars[b, t, : word.numel()] = word
    return chars


def count_computed(module: nn.Module) -> list[int]:
    """Make ``module`` record how many words each call of its computation gets."""
    calls: list[int] = []
    compute = module._features

    def counted(words: Tensor, char_mask: Tensor) -> Tensor:
        calls.append(words.size(0))
        return compute(words, char_mask)

    module._features = counted
    return calls


# -- deduplication ------------------------------------------------------------------------


def test_unique_rows() -> None:
    words = torch.tensor([[1, 2, 0], [3, 0, 0], [1, 2, 0], [1, 2, 3], [3, 0, 0]])
    first, inverse = unique_rows(words)
    assert first.numel() == 3
    assert torch.equal(words[first][inverse], words)
    assert torch.equal(words[first[inverse[0]]], words[0])
    assert inverse[0] == inverse[2] and inverse[1] == inverse[4]
    again = unique_rows(words)
    assert torch.equal(again[0], first) and torch.equal(again[1], inverse)  # deterministic


def test_unique_rows_falls_back_on_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every hash equal the exact (sorting) path must still separate the rows."""
    monkeypatch.setattr(char_cache, "_MULTIPLIERS", torch.zeros(64, dtype=torch.long))
    words = torch.tensor([[1, 2], [2, 1], [1, 2], [4, 0]])
    first, inverse = unique_rows(words)
    assert first.numel() == 3
    assert torch.equal(words[first][inverse], words)


def test_unique_rows_wider_than_the_multipliers() -> None:
    words = torch.randint(1, 4, (50, 150), generator=torch.Generator().manual_seed(0))
    words = torch.cat([words, words[:10]])
    first, inverse = unique_rows(words)
    assert first.numel() == 50
    assert torch.equal(words[first][inverse], words)


# -- per type against per token -----------------------------------------------------------


def test_eval_equals_per_token(factory: Factory) -> None:
    per_type, per_token = make(factory, cache_size=0)
    per_type.eval(), per_token.eval()
    for seed in range(3):
        chars = text_batch(seed)
        calls = count_computed(per_type)
        with torch.no_grad():
            got, expected = per_type(chars), per_token(chars)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        real = (chars != 0).any(-1)
        assert calls == [len({tuple(w.tolist()) for w in chars[real]})]  # once per type
        assert torch.count_nonzero(got[~real]) == 0


def test_cnn_eval_is_bit_identical() -> None:
    """The CNN's rows do not interact: per type is the same arithmetic as per token."""
    per_type, per_token = make(FACTORIES["cnn"], cache_size=0)
    per_type.eval(), per_token.eval()
    chars = text_batch(4)
    with torch.no_grad():
        assert torch.equal(per_type(chars), per_token(chars))


def test_training_gradients_equal_per_token(factory: Factory) -> None:
    per_type, per_token = make(factory, dropout=0.0)
    chars = text_batch(5)
    weights = torch.randn(*chars.shape[:2], per_type.output_dim)
    outputs = []
    for module in (per_type, per_token):
        module.train()
        out = module(chars)
        (out * weights).sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(per_type.named_parameters(), per_token.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert len(per_type.type_cache) == 0  # training never fills the cache


def test_dropout_mask_is_shared_by_a_type_within_a_batch() -> None:
    """The documented choice: one dropout mask per spelling and batch (per_type=False: one
    per token)."""
    chars = torch.tensor([[[1, 2, 3, 4], [5, 6, 0, 0], [1, 2, 3, 4]], [[1, 2, 3, 4]] * 3])
    per_type, per_token = make(FACTORIES["cnn"], dropout=0.5)
    per_type.train(), per_token.train()
    torch.manual_seed(1)
    out = per_type(chars)
    assert torch.equal(out[0, 0], out[0, 2]) and torch.equal(out[0, 0], out[1, 1])
    torch.manual_seed(1)
    out = per_token(chars)
    assert not torch.equal(out[0, 0], out[0, 2])


def test_training_is_deterministic(factory: Factory) -> None:
    per_type, _ = make(factory, dropout=0.3)
    per_type.train()
    chars = text_batch(6)
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        per_type.zero_grad()
        out = per_type(chars)
        out.square().sum().backward()
        results.append((out, [p.grad.clone() for p in per_type.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_per_type_module_equals_eager(factory: Factory) -> None:
    """Export scripts the module: per_type and the cache stay out of the graph."""
    per_type, _ = make(factory)
    per_type.eval()
    chars = text_batch(7)
    scripted = torch.jit.script(per_type)
    with torch.no_grad():
        torch.testing.assert_close(scripted(chars), per_type(chars), rtol=1e-6, atol=1e-6)


# -- the cache across batches -------------------------------------------------------------


def test_cache_hits_equal_fresh_computation(factory: Factory) -> None:
    per_type, per_token = make(factory)
    per_type.eval(), per_token.eval()
    calls = count_computed(per_type)
    first, second = text_batch(8), text_batch(8, batch=4, width=15)  # same lexicon, new padding
    with torch.no_grad():
        per_type(first)
        seen = len(per_type.type_cache)
        assert seen == calls[0]
        got = per_type(second)
        expected = per_token(second)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        new = {tuple(w[w != 0].tolist()) for w in second[(second != 0).any(-1)]}
        old = {tuple(w[w != 0].tolist()) for w in first[(first != 0).any(-1)]}
        assert calls[1:] == ([len(new - old)] if new - old else [])
        assert len(per_type.type_cache) == len(new | old)
        assert per_type(second).requires_grad is False
        assert len(calls) <= 2  # the third call was all hits


def test_cache_only_without_gradients(factory: Factory) -> None:
    per_type, _ = make(factory)
    per_type.eval()
    out = per_type(text_batch(9))  # grad enabled: nothing cached, a graph to the parameters
    assert out.requires_grad and len(per_type.type_cache) == 0
    with torch.inference_mode():
        per_type(text_batch(9))
    assert len(per_type.type_cache) > 0
    with torch.no_grad():  # a store made in inference mode, now written outside it
        per_type(text_batch(10))


def change_parameters(module: nn.Module, how: str) -> None:
    """Change ``module``'s parameters the way ``how`` names; leave it in eval mode."""
    if how == "optimizer step":  # in eval mode, so the cache is not cleared by train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        module(text_batch(11)).square().sum().backward()
        optimizer.step()
    elif how == "load_state_dict":
        torch.manual_seed(99)
        module.load_state_dict(type(module)(NUM_CHARS, **_sizes(module)).state_dict())
    elif how == "write through .data":  # no version counter change
        for param in module.parameters():
            param.data.mul_(1.5)
    elif how == "train and eval":
        module.train()
        module(text_batch(12)).sum().backward()
        with torch.no_grad():
            for param in module.parameters():
                param.add_(0.1 * param.grad)
    elif how == "to float64":
        module.to(torch.float64)
    module.eval()


def _sizes(module: nn.Module) -> dict[str, int]:
    if isinstance(module, CharCNN):
        return {"num_filters": module.output_dim}
    return {"hidden_size": module.output_dim // 2}


@pytest.mark.parametrize(
    "how",
    ["optimizer step", "load_state_dict", "write through .data", "train and eval", "to float64"],
)
def test_cache_is_never_stale(factory: Factory, how: str) -> None:
    per_type, _ = make(factory)
    per_type.eval()
    chars = text_batch(13)
    with torch.no_grad():
        before = per_type(chars)
    change_parameters(per_type, how)
    fresh = copy.deepcopy(per_type)  # a copy drops the cache
    assert len(fresh.type_cache) == 0
    fresh.per_type = False
    with torch.no_grad():
        got, expected = per_type(chars), fresh(chars)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # dtypes too
    if how == "to float64":
        assert got.dtype == torch.float64
    else:
        assert not torch.allclose(got, before)  # the cache held features that are now stale


def test_cache_cleared_when_training_starts(factory: Factory) -> None:
    per_type, _ = make(factory)
    per_type.eval()
    with torch.no_grad():
        per_type(text_batch(14))
    assert len(per_type.type_cache) > 0
    per_type.eval()
    assert len(per_type.type_cache) > 0
    per_type.train()
    assert len(per_type.type_cache) == 0


def test_cache_bound_and_least_recently_used(factory: Factory) -> None:
    per_type, per_token = make(factory, cache_size=5)
    per_type.eval(), per_token.eval()
    calls = count_computed(per_type)
    words = [torch.arange(1, n + 1) + n for n in range(1, 13)]  # 12 distinct spellings
    chars = torch.zeros(1, len(words), 13, dtype=torch.long)
    for t, word in enumerate(words):
        chars[0, t, : word.numel()] = word
    with torch.no_grad():
        torch.testing.assert_close(per_type(chars), per_token(chars), rtol=1e-6, atol=1e-6)
        assert len(per_type.type_cache) == 5
        for batch in (chars[:, 3:9], chars.flip(1), chars[:, :3], chars[:, 3:5]):
            got = per_type(batch)
            torch.testing.assert_close(got, per_token(batch), rtol=1e-6, atol=1e-6)
            assert len(per_type.type_cache) <= 5
        # The last two calls used the first five spellings: those are kept, the others not.
        calls.clear()
        per_type(chars[:, :5])
        assert calls == []
        per_type(chars[:, 5:6])
        assert calls == [1]


def test_cache_size_zero_disables_it(factory: Factory) -> None:
    per_type, _ = make(factory, cache_size=0)
    per_type.eval()
    with torch.no_grad():
        per_type(text_batch(15))
    assert len(per_type.type_cache) == 0
    with pytest.raises(ValueError, match="max_size"):
        CharFeatureCache(-1)


def test_pickling_drops_the_cache(factory: Factory) -> None:
    per_type, _ = make(factory, cache_size=7)
    per_type.eval()
    with torch.no_grad():
        per_type(text_batch(16))
    assert len(per_type.type_cache) > 0
    restored = pickle.loads(pickle.dumps(per_type))
    assert len(restored.type_cache) == 0 and restored.type_cache.max_size == 7


def test_cache_keys_keep_padding_inside_a_word() -> None:
    """Against the convention, but the CNN computes it: [1, pad, 2] is not [1, pad, 3]."""
    per_type, per_token = make(FACTORIES["cnn"])
    per_type.eval(), per_token.eval()
    chars = torch.tensor([[[1, 0, 2, 0], [1, 0, 3, 0], [1, 0, 0, 0]]])
    with torch.no_grad():
        for batch in (chars, chars[:, 1:], chars.flip(1)):
            torch.testing.assert_close(per_type(batch), per_token(batch), rtol=1e-6, atol=1e-6)
    assert len(per_type.type_cache) == 3
