"""Dropout whose random mask is cheaper to draw on the CPU.

``nn.Dropout`` draws its mask with ``bernoulli_``, one random number per unit, a measurable
share of a BiLSTM step on the CPU (see "Measurements behind the defaults" in
benchmarks/README.md). Here every 64-bit random draw yields four 16-bit lanes, each compared
with ``p``. The drop probability is ``p`` rounded to a multiple of 1/65536, and
kept units are scaled by the inverse of the *rounded* keep probability, so the expected output
still equals the input exactly. Other devices keep PyTorch's fused kernel.

TorchScript compiles :class:`FastMaskDropout` (:mod:`seqtag.integrations.export` scripts the
model's modules): the scripted module takes PyTorch's path on every device, since the CPU mask
is not scriptable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 4  # 16-bit lanes per 64-bit draw
_LEVELS = 1 << 16


def cpu_keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[Tensor, float]:
    """A boolean mask that keeps each unit with probability ``1 - p'`` and the scale ``1/(1-p')``.

    ``p'`` is ``p`` rounded to a multiple of 1/65536 (what 16 random bits can express).
    """
    count = math.prod(shape)
    threshold = round(p * _LEVELS)
    draws = (count + _LANES - 1) // _LANES
    # The full signed range: every one of the 64 bits is random (random_() alone gives 63).
    bits = torch.empty(draws, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    lanes = bits.view(torch.int16)[:count].view(shape)
    keep = lanes >= threshold - (_LEVELS // 2)
    return keep, _LEVELS / (_LEVELS - threshold)


class FastMaskDropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on the CPU; identical otherwise (and in eval mode)."""

    def forward(self, input: Tensor) -> Tensor:
        if (
            torch.jit.is_scripting()
            or not self.training
            or self.p == 0.0
            or input.device.type != "cpu"
            or self.inplace
        ):
            return F.dropout(input, self.p, self.training, self.inplace)  # nn.Dropout.forward
        return _cpu_dropout(input, self.p)


def _cpu_dropout(input: Tensor, p: float) -> Tensor:
    """Training-mode dropout of a CPU tensor with :func:`cpu_keep_mask`."""
    if round(p * _LEVELS) >= _LEVELS:
        return input * 0.0
    keep, scale = cpu_keep_mask(input.shape, p)
    return input * keep.to(input.dtype).mul_(scale)  # bfloat16 in, bfloat16 out
