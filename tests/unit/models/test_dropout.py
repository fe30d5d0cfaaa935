"""The CPU dropout draws four 16-bit lanes per 64-bit random number: check it is still dropout."""

from __future__ import annotations

import pytest
import torch

from seqtag.models.dropout import FastMaskDropout, cpu_keep_mask


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.7])
def test_drops_the_requested_fraction_and_keeps_the_expected_value(p: float) -> None:
    torch.manual_seed(0)
    output = FastMaskDropout(p).train()(torch.ones(1000, 1001))
    dropped = (output == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.003)
    assert output.mean().item() == pytest.approx(1.0, abs=0.01)


def test_every_lane_of_a_draw_is_random() -> None:
    """A lane fed by the draw's sign bit only (random_() without a range) would be biased."""
    torch.manual_seed(1)
    keep, _ = cpu_keep_mask((400_000,), 0.5)
    for lane in range(4):
        assert keep[lane::4].float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_odd_shapes_and_the_gradient_follow_the_mask() -> None:
    torch.manual_seed(2)
    inputs = torch.randn(3, 7, 5, requires_grad=True)
    output = FastMaskDropout(0.25).train()(inputs)
    assert output.shape == inputs.shape
    output.sum().backward()
    kept = output != 0
    assert torch.allclose(inputs.grad[kept], torch.full_like(inputs.grad[kept], 4 / 3))
    assert torch.all(inputs.grad[~kept] == 0)


def test_seeded_runs_repeat_and_successive_calls_differ() -> None:
    layer = FastMaskDropout(0.5).train()
    torch.manual_seed(3)
    first, second = layer(torch.ones(64, 64)), layer(torch.ones(64, 64))
    torch.manual_seed(3)
    assert torch.equal(layer(torch.ones(64, 64)), first)
    assert not torch.equal(first, second)


def test_evaluation_and_extreme_probabilities() -> None:
    inputs = torch.randn(4, 9)
    assert torch.equal(FastMaskDropout(0.5).eval()(inputs), inputs)
    assert torch.equal(FastMaskDropout(0.0).train()(inputs), inputs)
    assert torch.count_nonzero(FastMaskDropout(1.0).train()(inputs)) == 0


def test_keeps_the_input_dtype() -> None:
    """Under CPU autocast some features are bfloat16; dropout must not promote them."""
    output = FastMaskDropout(0.5).train()(torch.ones(8, 8, dtype=torch.bfloat16))
    assert output.dtype == torch.bfloat16
    assert set(output.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_scripted_dropout_is_pytorchs() -> None:
    """TorchScript compiles the module (seqtag.integrations.export scripts it) to PyTorch's own
    dropout."""
    dropout = torch.jit.script(FastMaskDropout(0.5))
    x = torch.randn(40, 50)
    assert torch.equal(dropout.eval()(x), x)
    torch.manual_seed(0)
    scripted = dropout.train()(x)
    torch.manual_seed(0)
    assert torch.equal(scripted, torch.nn.functional.dropout(x, 0.5, training=True))
