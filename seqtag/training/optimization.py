"""The optimizer and learning-rate schedule of a SequenceTagger, from its hyper-parameters.

The default is the recipe behind the README's chunking and NER results: Adam at 0.002 (fused
where that is valid), the learning rate multiplied by 0.85 after every epoch. The EWT configs
state a faster one (0.004, x0.75, 12 epochs) that holds EWT's accuracy but not CoNLL-2000's
("The default recipe" in benchmarks/README.md), so it is not the model's. ``lr`` is an ordinary
hyper-parameter that overrides the rate of any optimizer, so ``Tuner.lr_find`` can set it and
the next ``fit`` uses it. A plateau scheduler watches the metric the checkpoint callback
watches unless told otherwise, and refuses a ``mode`` that contradicts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from seqtag.errors import ConfigError
from seqtag.training.evaluation import metric_direction

log = logging.getLogger(__name__)

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
    trainer: pl.Trainer | None = None,
) -> Any:
    """What ``configure_optimizers`` returns: an optimizer, or one with an epoch scheduler.

    Args:
        parameters: the parameters to train.
        lr: learning rate for every parameter group, or ``None`` for the optimizer's own.
        lr_decay: per-epoch factor of the default exponential schedule (1.0: none).
        optimizer: makes the optimizer; ``None`` is Adam at :data:`DEFAULT_LR`, fused where
            :func:`fused_adam_fits`.
        lr_scheduler: makes the scheduler, or Lightning's scheduler configuration (a dict
            with ``scheduler`` and, say, ``monitor``); ``None`` is the exponential decay.
        trainer: the trainer that will step them (its precision and clipping decide whether
            Adam may be fused; its checkpoint callback what a plateau scheduler watches).
    """
    if optimizer is None:
        parameters = list(parameters)
        fused = fused_adam_fits(parameters, trainer)
        made = torch.optim.Adam(parameters, lr=DEFAULT_LR, fused=fused)
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
    config: dict[str, Any] = {"interval": "epoch"}
    config.update(scheduler if isinstance(scheduler, dict) else {"scheduler": scheduler})
    if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = plateau_monitor(config["scheduler"], config.get("monitor"), trainer)
    return {"optimizer": made, "lr_scheduler": config}


#: Devices whose fused Adam kernel takes every floating-point dtype Lightning trains in.
FUSED_DEVICES = ("cpu", "cuda")


def fused_adam_fits(parameters: list[torch.nn.Parameter], trainer: pl.Trainer | None) -> bool:
    """Whether the default Adam may run fused: one kernel per step instead of several.

    Not where a parameter is on a device without the kernel, and not where the trainer
    clips gradients under mixed precision: a fused Adam unscales the gradients inside its
    own step, after clipping would have to see them unscaled, so Lightning refuses the pair
    ("does not allow for gradient clipping"), or under FSDP clips the still-scaled values.
    """
    if not parameters or any(
        p.device.type not in FUSED_DEVICES or not p.dtype.is_floating_point for p in parameters
    ):
        return False
    if trainer is None:
        return True
    clipping = bool(trainer.gradient_clip_val)
    return not (clipping and str(trainer.precision).endswith("-mixed"))


def plateau_monitor(
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    said: str | None,
    trainer: pl.Trainer | None,
) -> str:
    """The metric a plateau scheduler watches, logged on the ``seqtag`` logger with where
    it came from: what the user said (the scheduler configuration's ``monitor``, or the
    scheduler's own, as Lightning's ``lightning.pytorch.cli.ReduceLROnPlateau`` has), else
    what the checkpoint callback monitors, else ``val_loss``.

    Raises:
        ConfigError: the scheduler's ``mode`` contradicts the metric (``val_acc`` with
            ``mode="min"`` would cut the rate every time accuracy improves).
    """
    callback = trainer.checkpoint_callback if trainer is not None else None
    watched = getattr(callback, "monitor", None)
    if said is None:
        said = getattr(scheduler, "monitor", None)
    if said is not None:
        monitor, source = said, "as its monitor setting says"
    elif watched is not None:
        monitor, source = watched, "as the checkpoint callback does"
    else:
        monitor, source = "val_loss", "the default: no monitor given, none checkpointed"
    mode = scheduler.mode
    better = metric_direction(monitor)
    if better is not None and better != mode:
        moves = "falls" if better == "min" else "rises"
        raise ConfigError(
            f"the ReduceLROnPlateau scheduler has mode={mode!r} and monitors {monitor} "
            f"({source}), which {moves} as the model improves: set mode={better!r}, or say "
            "what it monitors (lr_scheduler returning {'scheduler': ..., 'monitor': "
            "'val_acc'}, or lightning.pytorch.cli.ReduceLROnPlateau(optimizer, monitor=...))"
        )
    log.info("the ReduceLROnPlateau scheduler monitors %s (mode %s), %s", monitor, mode, source)
    return monitor


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The module's trainer, or ``None`` when ``configure_optimizers`` is called without one."""
    try:
        return module.trainer
    except RuntimeError:  # Lightning's "is not attached to a `Trainer`"
        return None
