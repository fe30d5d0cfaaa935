"""The optimizer and learning-rate schedule of a SequenceTagger, from its hyper-parameters.

The default is the recipe behind the README's results: Adam at 0.002 (fused), the learning
rate multiplied by 0.85 after every epoch. ``lr`` is an ordinary hyper-parameter that overrides
the rate of any optimizer, so ``Tuner.lr_find`` can set it and the next ``fit`` uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

#: The optimizer of the benchmarked recipe: Adam at this learning rate...
DEFAULT_LR = 2e-3
#: ...multiplied by this after every epoch.
DEFAULT_LR_DECAY = 0.85


def make_optimization(
    parameters: Iterable[torch.nn.Parameter],
    *,
    lr: float | None,
    lr_decay: float,
    optimizer: Callable[[Iterable[Any]], Optimizer] | None,
    lr_scheduler: Callable[[Optimizer], Any] | None,
) -> Any:
    """What ``configure_optimizers`` returns: an optimizer, or one with an epoch scheduler.

    Args:
        parameters: the parameters to train.
        lr: learning rate for every parameter group, or ``None`` for the optimizer's own.
        lr_decay: per-epoch factor of the default exponential schedule (1.0: none).
        optimizer: makes the optimizer; ``None`` is Adam at :data:`DEFAULT_LR`.
        lr_scheduler: makes the scheduler; ``None`` is the exponential decay.
    """
    if optimizer is None:
        made = torch.optim.Adam(parameters, lr=DEFAULT_LR, fused=True)
    else:
        made = optimizer(parameters)
    if lr is not None:
        for group in made.param_groups:
            group["lr"] = lr
    if lr_scheduler is not None:
        scheduler = lr_scheduler(made)
    elif lr_decay != 1.0:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(made, lr_decay)
    else:
        return made
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = getattr(scheduler, "monitor", "val_loss")
    return {"optimizer": made, "lr_scheduler": config}
