"""What a seqtag checkpoint must hold, checked before anything is built from it.

A checkpoint is user input: it may be edited, truncated, written by a newer seqtag, or not a
checkpoint at all (a tensor or a list saved with ``torch.save``). Every entry point (``seqtag
test|predict|fit --ckpt_path``, ``export``, ``calibrate``, ``load_from_checkpoint``, a plain
``Trainer`` given ``ckpt_path``) runs these checks, so each of those cases is one
:class:`~seqtag.errors.CheckpointError` saying what is wrong, instead of a ``KeyError`` or a
size-mismatch traceback from deep inside Lightning or PyTorch.

The checks, in order: the file holds a dictionary of Lightning's layout; seqtag's section
(:mod:`seqtag.checkpoint.io`) is there in a known version with readable vocabularies; the
hyper-parameters are arguments the model class has (an unknown one means a newer seqtag or
another class), each of a valid type and range; the weights are tensors, finite, and (once
the network is built from the checkpoint's own vocabularies and hyper-parameters) of exactly
the names and shapes that network has. The one entry of a state dict that is not a tensor,
the model's extra state (:data:`EXTRA_STATE_KEY`), must be plain data.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch

from seqtag.errors import CheckpointError, ConfigError
from seqtag.options import check_ranges

#: Keys Lightning itself needs to open any checkpoint.
_LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict")
#: Keys Lightning needs to resume training from a checkpoint.
RESUME_KEYS = ("epoch", "global_step", "loops", "optimizer_states", "lr_schedulers")
#: Buffers added after checkpoints were first written: absent from older files, filled in on load.
OPTIONAL_WEIGHTS = frozenset({"tagger.temperature"})
#: Where ``Module.state_dict()`` puts what the model's ``get_extra_state()`` returns (torch's
#: documented key): the network's description, plain data, beside the tensors. Checkpoint files
#: leave it out (their ``seqtag`` section says the same); a state dict saved on its own has it.
EXTRA_STATE_KEY = "_extra_state"


#: Types of the Lightning entries that loading or resuming reads, where present.
_LIGHTNING_TYPES: dict[str, type | tuple[type, ...]] = {
    "pytorch-lightning_version": str,
    "epoch": int,
    "global_step": int,
    "loops": dict,
    "callbacks": dict,
    "optimizer_states": list,
    "lr_schedulers": list,
    "hparams_name": (str, type(None)),
    "datamodule_hparams_name": (str, type(None)),
    "datamodule_hyper_parameters": (dict, type(None)),
}


def check_is_dictionary(checkpoint: Any) -> None:
    """What ``torch.save`` wrote is a dictionary at all (not a tensor, a list...)."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"not a seqtag checkpoint: the file holds a {type(checkpoint).__name__}, not the "
            "dictionary that seqtag fit writes"
        )


def check_layout(checkpoint: Any) -> None:
    """A dictionary with Lightning's keys and a state dict of named tensors."""
    check_is_dictionary(checkpoint)
    for key, kind in _LIGHTNING_TYPES.items():
        if key in checkpoint and not isinstance(checkpoint[key], kind):
            raise CheckpointError(
                f"its {key!r} is a {type(checkpoint[key]).__name__}, not what Lightning wrote "
                "there (the file was edited)"
            )
    missing = [key for key in _LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"not a complete Lightning checkpoint: it has no {', '.join(map(repr, missing))} "
            "(the file was edited or is not from seqtag fit)"
        )
    state = checkpoint["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(
            f"its 'state_dict' is a {type(state).__name__}, expected the model's named tensors"
        )
    for name, value in state.items():
        if name == EXTRA_STATE_KEY and is_plain_data(value):
            continue
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"its 'state_dict' entry {name!r} is a {type(value).__name__}, expected a tensor"
            )


def check_finite(checkpoint: Mapping[str, Any]) -> None:
    """Refuse weights holding NaN or infinity: the run diverged or the file was damaged."""
    for name, value in checkpoint["state_dict"].items():
        if not isinstance(value, torch.Tensor):  # the extra state: plain data
            continue
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"its weight {name!r} holds NaN or infinite values (training diverged, or the "
                "file is damaged): use an earlier checkpoint"
            )


#: Hyper-parameters a checkpoint may hold that are never restored from it. The optimizer and its
#: schedule belong to the run (resuming takes them from the run's config); ``spec`` (``data``
#: before it was renamed) is rebuilt from the checkpoint's vocabularies; LightningCLI's
#: ``_class_path`` and ``_instantiator`` name code to import. Checkpoints written before seqtag
#: dropped them at saving still hold them.
NOT_RESTORED = frozenset(
    {"optimizer", "lr_scheduler", "spec", "data", "_class_path", "_instantiator"}
)


def restorable_hyperparameters(checkpoint: Mapping[str, Any], model_class: type) -> dict[str, Any]:
    """The checkpoint's hyper-parameters that may rebuild ``model_class``: plain, checked data.

    The only door from a checkpoint's ``hyper_parameters`` to a model's constructor. Entries in
    :data:`NOT_RESTORED` (and any other ``_``-prefixed key) are left out unread, so no class
    path, callable or import name stored in a checkpoint ever reaches Lightning's or
    jsonargparse's instantiation. Every other entry must be an argument of ``model_class``
    holding plain data (numbers, strings, booleans, ``None``, lists and string-keyed
    dictionaries of those) of the argument's type and range; anything else is a
    :class:`CheckpointError`.
    """
    hparams = checkpoint.get("hyper_parameters")
    if hparams is None:
        raise CheckpointError(
            "it has no 'hyper_parameters': the network cannot be rebuilt (the file was edited "
            "or is not from seqtag fit)"
        )
    if not isinstance(hparams, Mapping):
        raise CheckpointError(
            f"its 'hyper_parameters' are a {type(hparams).__name__}, expected a dictionary of "
            f"{model_class.__name__}'s arguments"
        )
    kept = {}
    for key, value in hparams.items():
        if not isinstance(key, str):
            raise CheckpointError(f"its 'hyper_parameters' hold a key {key!r} that is not a name")
        if key in NOT_RESTORED or key.startswith("_"):
            continue
        if not is_plain_data(value):
            raise CheckpointError(
                f"its hyper-parameter {key!r} holds a {type(value).__name__}, not plain data "
                "(a checkpoint restores numbers, strings and lists of them, never objects)"
            )
        kept[key] = value
    parameters = inspect.signature(model_class.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = [key for key in kept if key not in parameters]
        if unknown:
            from seqtag import __version__

            raise CheckpointError(
                f"the checkpoint was made by a newer seqtag or for another model class: "
                f"{model_class.__name__} of seqtag {__version__} has no argument "
                f"{', '.join(map(repr, unknown))}; upgrade seqtag to load it"
            )
    check_arguments(kept, model_class, "hyper-parameter")
    return kept


#: Counters Lightning stores; negative values are edits that would resume at a wrong point.
_COUNTERS = ("epoch", "global_step")


def check_scalars(checkpoint: Mapping[str, Any]) -> None:
    """Scalars a checkpoint carries, in their ranges: the temperature > 0, counters >= 0.

    A temperature of 0 or below would turn every confidence into ``nan`` or into its inverse;
    an edited counter would resume training at a step that was never reached.
    """
    temperature = checkpoint["state_dict"].get("tagger.temperature")
    if temperature is not None:
        if temperature.numel() != 1 or not temperature.is_floating_point():
            raise CheckpointError(
                f"its 'tagger.temperature' has shape {list(temperature.shape)}, expected one "
                "floating-point number (the file was edited)"
            )
        if not float(temperature) > 0:
            raise CheckpointError(
                f"its temperature is {float(temperature)!r}; it must be a number > 0 (1 when "
                "uncalibrated): the file was edited"
            )
    for key in _COUNTERS:
        value = checkpoint.get(key)
        if value is not None and (isinstance(value, bool) or value < 0):
            raise CheckpointError(f"its {key!r} is {value!r}, expected an integer >= 0")


def check_hyperparameters(checkpoint: Mapping[str, Any], model_class: type) -> None:
    """Every restorable hyper-parameter is an argument of ``model_class``, of a valid value."""
    restorable_hyperparameters(checkpoint, model_class)


def is_plain_data(value: Any, depth: int = 0) -> bool:
    """Numbers, strings, booleans, ``None``, and lists or string-keyed dictionaries of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if depth >= 8:  # deeper than any hyper-parameter seqtag writes
        return False
    if isinstance(value, list | tuple):
        return all(is_plain_data(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and is_plain_data(item, depth + 1) for key, item in value.items()
        )
    return False


def check_arguments(values: Mapping[str, Any], cls: type, what: str) -> None:
    """Each stored value fits the type and range of ``cls``'s argument of that name."""
    function = cls.__init__
    checks = _allowed_values(function)
    for name, value in values.items():
        expected = checks.get(name)
        if expected is not None and not expected(value):
            raise CheckpointError(
                f"its {what} {name}={value!r} is not a valid value for {cls.__name__} "
                "(the file was edited?)"
            )
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    try:
        check_ranges("", function, {**defaults, **values})
    except ConfigError as err:
        raise CheckpointError(f"its {what} {str(err).lstrip('.')}") from None


def check_resume_state(checkpoint: Mapping[str, Any]) -> None:
    """What ``seqtag fit --ckpt_path`` needs besides the weights to continue a run."""
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"cannot resume training from it: it has no {', '.join(map(repr, missing))} (a "
            "checkpoint saved with weights only, or edited); start a new run instead"
        )
    # Lightning zips the run's optimizers with these: an empty list resumes with fresh ones.
    optimizers = checkpoint["optimizer_states"]
    if (
        not isinstance(optimizers, list)
        or not optimizers
        or not all(
            isinstance(state, Mapping)
            and isinstance(state.get("state"), Mapping)
            and isinstance(state.get("param_groups"), list)
            and state["param_groups"]
            and all(
                isinstance(g, Mapping) and isinstance(g.get("params"), list)
                for g in state["param_groups"]
            )
            for state in optimizers
        )
    ):
        raise CheckpointError(
            "cannot resume training from it: its 'optimizer_states' hold no usable optimizer "
            "state (the file was edited); start a new run instead"
        )


def check_weights(stored: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """The stored weights have the names and shapes of the network the checkpoint describes.

    ``expected`` is the state dict of the network built from the checkpoint's own vocabularies
    and hyper-parameters: a mismatch means the parts of the file disagree (a tag removed from
    the vocabulary, a hidden size edited), which PyTorch would report as a size mismatch.
    """
    stored = {k: v for k, v in stored.items() if k != EXTRA_STATE_KEY}
    expected = {k: v for k, v in expected.items() if k != EXTRA_STATE_KEY}
    missing = [k for k in expected if k not in stored and k not in OPTIONAL_WEIGHTS]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"no weights {_few(missing)}")
        if unexpected:
            parts.append(f"unknown weights {_few(unexpected)}")
        raise CheckpointError(
            f"its weights do not fit the network its hyper-parameters describe: "
            f"{'; '.join(parts)} (the file was edited, or was written for another model)"
        )
    for name, tensor in expected.items():
        if name in stored and tuple(stored[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"its weight {name!r} has shape {list(stored[name].shape)}, but its vocabularies "
                f"and hyper-parameters make it {list(tensor.shape)} (the file was edited)"
            )


def _few(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


_Check = Callable[[Any], bool]


def _allowed_values(function: Callable[..., Any]) -> dict[str, _Check]:
    """Per argument of ``function``: a test of a stored value's type (ranges are checked apart).

    Covers what a checkpoint can hold for seqtag's arguments: literals, booleans, numbers,
    strings, ``None`` where allowed. Other annotations (callables, classes) are not checked.
    """
    checks: dict[str, _Check] = {}
    try:
        hints = get_type_hints(function)
    except (NameError, TypeError):  # a user's subclass with unresolvable annotations
        return checks
    for name, hint in hints.items():
        check = _value_check(hint)
        if check is not None:
            checks[name] = check
    return checks


def _value_check(hint: Any) -> _Check | None:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_value_check(option) for option in get_args(hint)]
        if any(option is None for option in options):
            return None
        return lambda value: any(option(value) for option in options)  # type: ignore[misc]
    if hint is type(None):
        return lambda value: value is None
    if origin is Literal:
        allowed = get_args(hint)
        return lambda value: isinstance(value, str | int | bool) and value in allowed
    if hint is bool:
        return lambda value: isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, int) and hint is not bool:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, float):
        return lambda value: isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return lambda value: isinstance(value, str)
    return None
