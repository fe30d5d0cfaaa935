"""A checkpoint's optimizer state must fit the run's optimizer before training resumes.

Lightning loads ``optimizer_states`` into the run's optimizers only after setting up the run,
and PyTorch checks little: parameter groups of another size are a ``ValueError`` traceback, and
a moment tensor of another shape (an edited ``exp_avg``) fails only at the first resumed step.
:class:`OptimizerStateCheck` (``seqtag fit`` adds it) loads the stored state into a throwaway
copy of the run's optimizer when the checkpoint is read, so each of those is one
:class:`~seqtag.errors.CheckpointError` naming the file, before anything is trained. (An empty
``optimizer_states`` list is refused earlier, by
:func:`seqtag.checkpoint.schema.check_resume_state`.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from seqtag.errors import CheckpointError

__all__ = ["OptimizerStateCheck", "optimizer_state_problem"]

#: What ``Optimizer.load_state_dict`` raises for a state it cannot take.
_LOAD_ERRORS = (ValueError, KeyError, TypeError, RuntimeError, IndexError, AttributeError)


class OptimizerStateCheck(Callback):
    """Refuses, when a training checkpoint is read, optimizer state the run cannot take."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        stored = checkpoint.get("optimizer_states")
        if not isinstance(stored, list) or getattr(
            trainer.strategy, "restore_checkpoint_after_setup", False
        ):
            return  # none to check, or sharded states (FSDP, DeepSpeed) that the strategy reads
        problem = optimizer_state_problem(pl_module, stored)
        if problem is not None:
            raise CheckpointError(
                f"{trainer.ckpt_path}: cannot resume training from it: its optimizer state "
                f"does not fit this run's optimizer ({problem}; the file was edited, or the "
                "model's parameters differ)"
            )


def optimizer_state_problem(module: pl.LightningModule, stored: list[Any]) -> str | None:
    """Why ``stored`` (a checkpoint's ``optimizer_states``) cannot resume ``module``'s
    optimizers, or ``None``. The optimizers are made afresh from ``configure_optimizers`` and
    dropped after the trial; the module's parameters are not touched."""
    optimizers = list(_optimizers(module.configure_optimizers()))
    if len(stored) != len(optimizers):
        return f"{len(stored)} optimizer states for {len(optimizers)} optimizers"
    for number, (optimizer, state) in enumerate(zip(optimizers, stored, strict=True)):
        try:
            optimizer.load_state_dict(state)
        except _LOAD_ERRORS as err:
            text = str(err).splitlines()[0] if str(err) else ""
            return f"optimizer {number}: {type(err).__name__}: {text}"
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                for name, value in optimizer.state.get(parameter, {}).items():
                    if not _fits(value, parameter):
                        return (
                            f"optimizer {number}: its {name!r} has shape "
                            f"{_shape(value)}, the parameter {list(parameter.shape)}"
                        )
    return None


def _fits(value: Any, parameter: torch.Tensor) -> bool:
    """A per-parameter state entry: a scalar (``step``) or a tensor of the parameter's shape."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 or value.shape == parameter.shape
    return isinstance(value, int | float | bool) or value is None


def _shape(value: Any) -> Any:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _optimizers(configured: Any) -> Iterator[Optimizer]:
    """The optimizers in what ``configure_optimizers`` returned (an optimizer, a dictionary,
    a list or tuple of them, or ``([optimizers], [schedulers])``)."""
    if isinstance(configured, Optimizer):
        yield configured
    elif isinstance(configured, Mapping):
        yield from _optimizers(configured.get("optimizer"))
    elif isinstance(configured, list | tuple):
        first = configured[0] if configured else None
        if len(configured) == 2 and isinstance(first, list | tuple):
            yield from _optimizers(first)  # ([optimizers], [schedulers])
        else:
            for item in configured:
                yield from _optimizers(item)
