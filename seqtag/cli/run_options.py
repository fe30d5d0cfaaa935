"""Checks of a run's trainer, checkpoint and model options, made before anything is built.

Lightning accepts some values that later end in a traceback (``val_check_interval 0`` divides
by zero in the first epoch, ``accelerator tpu`` without ``torch_xla`` fails to import, a
``monitor`` that nothing logs fails at the first validation), and some it accepts silently
(a negative ``gradient_clip_val`` clips nothing). :func:`check_run_options` refuses them all
as one line naming the option, with exit status 2, before the data is read or the model is
built; the values Lightning refuses itself keep Lightning's checks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from seqtag.errors import CommandLineError, ConfigError

__all__ = ["check_run_options"]

#: What a seqtag model logs for every task (``train_loss`` each step; the rest per validation).
METRICS = ("val_acc", "val_loss", "train_loss", "val_skipped_tokens", "epoch", "step")
#: What it logs only for span tasks (``data.tag_scheme`` set): span scores on the dev set.
SPAN_METRICS = ("val_f1", "val_precision", "val_recall", "val_skipped_sentences")


def check_run_options(subcommand: str | None, config: Mapping[str, Any]) -> None:
    """Refuse trainer, checkpoint and model values that would fail later, or do nothing.

    Args:
        subcommand: ``fit``, ``validate``, ``test``, ``predict``, or ``None`` (a CLI made
            with ``run=False``; checked like ``fit``).
        config: the subcommand's parsed configuration as plain data (``trainer``,
            ``checkpoint``, ``model``, ``data`` and ``ckpt_path`` entries are read).

    Raises:
        CommandLineError: ``OPTION: must be ..., got VALUE (see seqtag SUBCOMMAND --help)``.
        ConfigError: ``SEQTAG_THREADS`` is not a usable thread count.
    """
    from seqtag.runtime.threads import explicit_threads

    help_hint = f" (see seqtag {subcommand or 'fit'} --help)"
    try:
        _check_trainer(_section(config, "trainer"))
        _check_checkpoint(_section(config, "checkpoint"))
        _check_checkpoint(_section(config, "last_checkpoint"), "last_checkpoint")
        if subcommand in (None, "fit"):
            _check_monitor(config)
        _check_model_size(config.get("model"))
    except CommandLineError as err:
        raise CommandLineError(f"{err}{help_hint}") from None
    explicit_threads()  # SEQTAG_THREADS=99999999999999999999: now, not at the first batch


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def _refuse(option: str, requirement: str, value: Any) -> CommandLineError:
    return CommandLineError(f"{option}: must be {requirement}, got {value}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(section: Mapping[str, Any], option: str, low: int, *, optional: bool) -> None:
    """``section[name]`` is an integer >= ``low`` (or ``None`` where ``optional``)."""
    name = option.split(".", 1)[1]
    value = section.get(name)
    if value is None and (optional or name not in section):
        return
    if not _is_int(value) or value < low:
        raise _refuse(option, f"an integer >= {low}", value)


def _check_trainer(trainer: Mapping[str, Any]) -> None:
    interval = trainer.get("val_check_interval")
    if _is_int(interval) and interval < 1:
        # Lightning divides the batch index by it (ZeroDivisionError in the first epoch).
        raise _refuse(
            "trainer.val_check_interval",
            "a number of training batches >= 1 or a fraction of an epoch in [0.0, 1.0]",
            interval,
        )
    _at_least(trainer, "trainer.accumulate_grad_batches", 1, optional=False)
    _at_least(trainer, "trainer.check_val_every_n_epoch", 1, optional=True)
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (
        isinstance(clip, int | float) and not isinstance(clip, bool) and math.isfinite(clip)
    ):
        raise _refuse("trainer.gradient_clip_val", "a number >= 0 (0: no clipping)", clip)
    if clip is not None and clip < 0:  # Lightning accepts it and clips nothing
        raise _refuse("trainer.gradient_clip_val", "a number >= 0 (0: no clipping)", clip)
    _check_accelerator(trainer.get("accelerator"))


def _check_accelerator(accelerator: Any) -> None:
    """A named accelerator that this machine lacks (``tpu`` without ``torch_xla``) is refused
    here: Lightning's own refusal of it is an import error with a traceback."""
    if not isinstance(accelerator, str):
        return
    from lightning.pytorch.accelerators import AcceleratorRegistry

    name = accelerator.lower()
    names = sorted(AcceleratorRegistry.available_accelerators())
    if name not in names:
        return  # "auto", "gpu", or a name Lightning refuses in one line itself
    if _available(AcceleratorRegistry, name):
        return
    usable = [other for other in names if _available(AcceleratorRegistry, other)]
    raise CommandLineError(
        f"trainer.accelerator: {accelerator} is not available on this machine; use "
        f"{', '.join(['auto', *usable])}"
    )


def _available(registry: Any, name: str) -> bool:
    try:
        return bool(registry[name]["accelerator"].is_available())
    except Exception:  # a probe that fails means: not usable here
        return False


def _check_checkpoint(checkpoint: Mapping[str, Any], section: str = "checkpoint") -> None:
    _at_least(checkpoint, f"{section}.every_n_train_steps", 0, optional=True)
    _at_least(checkpoint, f"{section}.every_n_epochs", 0, optional=True)
    if "save_top_k" in checkpoint:
        top_k = checkpoint["save_top_k"]
        if not _is_int(top_k) or top_k < -1:
            raise _refuse(f"{section}.save_top_k", "an integer >= -1 (-1: keep every one)", top_k)
    mode = checkpoint.get("mode", "min")
    if mode not in ("min", "max"):
        raise _refuse(f"{section}.mode", "min or max", mode)


def _check_monitor(config: Mapping[str, Any]) -> None:
    """``checkpoint.monitor`` names a metric the model logs.

    Only for seqtag's own models (another class may log metrics of its own). The span scores
    exist when ``data.tag_scheme`` is set, or may exist when resuming (the checkpoint's data
    decides).
    """
    monitor = _section(config, "checkpoint").get("monitor")
    if monitor is None or not _seqtag_model(config.get("model")):
        return
    spans = bool(_section(config, "data").get("tag_scheme")) or bool(config.get("ckpt_path"))
    logged = [*METRICS[:3], *SPAN_METRICS[:3]] if spans else list(METRICS[:3])
    if monitor in METRICS or (spans and monitor in SPAN_METRICS):
        return
    if monitor in SPAN_METRICS:
        raise CommandLineError(
            f"checkpoint.monitor: {monitor} is logged only for span tasks (set data.tag_scheme); "
            f"this run logs {', '.join(logged)}"
        )
    span_note = "" if spans else f" ({', '.join(SPAN_METRICS[:3])} for span tasks)"
    raise CommandLineError(
        f"checkpoint.monitor: {monitor} is not a metric seqtag logs; choose one of "
        f"{', '.join(logged)}{span_note}"
    )


def _seqtag_model(model: Any) -> bool:
    if not isinstance(model, Mapping):
        return model is None
    class_path = model.get("class_path")
    return class_path is None or str(class_path).startswith("seqtag.")


def _check_model_size(model: Any) -> None:
    """A seqtag network too large for the machine's memory, refused before it is allocated."""
    if not _seqtag_model(model) or not isinstance(model, Mapping):
        return
    init_args = model.get("init_args")
    if not isinstance(init_args, Mapping):
        return
    from seqtag.training.module import SequenceTagger
    from seqtag.training.network import check_fits_in_memory

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(SequenceTagger.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    hparams = {**defaults, **init_args}
    try:
        check_fits_in_memory(
            hparams, embedding_dim=hparams.get("embedding_dim"), prefix="model.init_args."
        )
    except ConfigError as err:
        raise CommandLineError(str(err)) from None
    except (KeyError, TypeError, ValueError):
        return  # not SequenceTagger's arguments: the class checks its own when it is built
