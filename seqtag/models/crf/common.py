"""What the CRF's modules and the losses share: reductions, temperature scaling, float32.

Public names, so that :mod:`~seqtag.models.crf.layer`, :mod:`~seqtag.models.crf.spans` and
:mod:`seqtag.models.losses` use one rule each without reaching into each other.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["sum", "mean", "token_mean", "none"]
REDUCTIONS = ("sum", "mean", "token_mean", "none")
Temperature = Tensor | float | None
"""Divides every score (emissions, start, transitions, end) when given; ``None``: no scaling."""


def as_bool_mask(
    value: Tensor | list, name: str, shape: tuple[int, ...], device: torch.device
) -> Tensor:
    """Turn a constraint mask into a bool tensor of the expected shape, or say what is wrong."""
    try:
        tensor = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a bool tensor or nested list of bools: {err}") from err
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if tensor.dtype != torch.bool:
        if tensor.is_floating_point() or not bool(((tensor == 0) | (tensor == 1)).all()):
            raise ValueError(f"{name} must hold booleans (or 0/1), got dtype {tensor.dtype}")
        tensor = tensor.bool()
    return tensor


def scaled(scores: Tensor, temperature: Temperature) -> Tensor:
    """``scores / temperature``; ``None`` returns ``scores`` itself (bit-identical results)."""
    return scores if temperature is None else scores / temperature


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_losses(nll: Tensor, mask: Tensor, reduction: Reduction) -> Tensor:
    """Reduce per-sentence losses ``[B]``; ``token_mean`` divides by the real tokens."""
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.mean()
    return nll.sum() / mask.sum()


def float32_only(emissions: Tensor) -> torch.autocast:
    """Disable autocast so the log-space sums stay in float32."""
    return torch.autocast(device_type=emissions.device.type, enabled=False)
