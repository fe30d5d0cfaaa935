"""seqtag's own section of a Lightning checkpoint: the vocabularies, as plain data.

Every checkpoint carries what prediction needs besides the weights (vocabularies, tag set, both
tag schemes, the unknown-word rule), as lists, strings and numbers, so that
``torch.load(path, weights_only=True)`` opens it and the checkpoint alone can tag text. The
section is versioned: a file written by a newer seqtag, with a layout this one does not know,
is refused with a clear message instead of being half understood.
"""

from __future__ import annotations

import errno
import os
import pickle
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import lightning.pytorch as pl
import torch

from seqtag.checkpoint.schema import (
    NOT_RESTORED,
    check_finite,
    check_is_dictionary,
    check_layout,
    check_scalars,
    is_plain_data,
    restorable_hyperparameters,
)
from seqtag.data.vocab import Vocabularies, check_vocabulary_data
from seqtag.errors import CheckpointError, ConfigError

#: The checkpoint :func:`load_checkpoint` validated last, with its vocabularies, until a model
#: takes it (:func:`take_validated`): the model's own hook then does not check it again.
_just_validated: ContextVar[tuple[dict[str, Any], Vocabularies] | None] = ContextVar(
    "seqtag_just_validated", default=None
)

#: Key of seqtag's section in a Lightning checkpoint.
CHECKPOINT_KEY = "seqtag"
#: Layout version of that section; raise it when the layout changes.
CHECKPOINT_FORMAT_VERSION = 1
#: Hyper-parameters that fix the network's shapes; a model restoring a checkpoint must agree.
ARCHITECTURE = (
    "rnn_type",
    "hidden_size",
    "num_layers",
    "embedding_dim",
    "char_features",
    "char_dim",
    "char_hidden_size",
    "decoder",
)


def write_checkpoint_section(
    checkpoint: dict[str, Any],
    vocabularies: Vocabularies,
    model_class: type,
    embedding_dim: int | None = None,
) -> None:
    """Store the vocabularies (and the layout version) in ``checkpoint``; keep it plain data.

    What LightningCLI put beside the hyper-parameters to rebuild the model by importing a class
    (``_class_path``, ``_instantiator``, the optimizer's and scheduler's class paths) is left
    out: a checkpoint describes a model, not code to run. The model's class is recorded as a
    name only (``model_class``), to warn when another class loads the file. The network's
    ``embedding_dim`` (the data's width when the model left it unset) is recorded among the
    hyper-parameters, which are then the arguments that rebuild exactly this network.
    """
    checkpoint[CHECKPOINT_KEY] = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "vocabularies": vocabularies.to_dict(),
        "model_class": f"{model_class.__module__}.{model_class.__qualname__}",
    }
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint[key] = _without_code(checkpoint[key])
    if embedding_dim is not None and isinstance(checkpoint.get("hyper_parameters"), dict):
        checkpoint["hyper_parameters"]["embedding_dim"] = embedding_dim


def stored_model_class(checkpoint: dict[str, Any]) -> str | None:
    """The name of the class that wrote ``checkpoint`` (never imported), if it says."""
    section = checkpoint.get(CHECKPOINT_KEY)
    name = section.get("model_class") if isinstance(section, dict) else None
    if name is None:  # written before seqtag recorded it: LightningCLI's entry, if any
        hparams = checkpoint.get("hyper_parameters")
        name = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return name if isinstance(name, str) else None


def _without_code(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters without the entries that are never restored (see ``NOT_RESTORED``)."""
    return {
        key: value
        for key, value in hparams.items()
        if not (isinstance(key, str) and (key in NOT_RESTORED or key.startswith("_")))
    }


def read_checkpoint_section(checkpoint: Any) -> Vocabularies:
    """The vocabularies stored in ``checkpoint``, after checking the section's version."""
    section = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(section, dict) or "vocabularies" not in section:
        raise CheckpointError(
            f"not a seqtag checkpoint: it has no '{CHECKPOINT_KEY}' section with the "
            "vocabularies (use a checkpoint written by seqtag fit)"
        )
    return read_versioned_vocabularies(section, "the checkpoint")


def read_versioned_vocabularies(section: Mapping[str, Any], source: str) -> Vocabularies:
    """The vocabularies of a versioned plain-data ``section`` (a checkpoint's ``seqtag``
    section, a state dict's extra state), after checking its ``format_version``; ``source``
    names what holds it in the messages."""
    version = section.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        if isinstance(version, int) and version > CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"{source} was made by a newer seqtag (checkpoint format {version}; this "
                f"seqtag reads format {CHECKPOINT_FORMAT_VERSION}): upgrade seqtag to load it"
            )
        raise CheckpointError(
            f"unknown seqtag checkpoint format {version!r} (this seqtag reads format "
            f"{CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        check_vocabulary_data(section["vocabularies"])
        vocabularies = Vocabularies.from_dict(section["vocabularies"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(
            f"{source}'s vocabularies are damaged ({type(err).__name__}: {err})"
        ) from None
    return vocabularies


def check_architecture(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    source: str = "the checkpoint",
    remedy: str = "leave it out (load_from_checkpoint takes the checkpoint's) or give the "
    "checkpoint's value",
) -> None:
    """Refuse to restore weights into a network of other shapes, naming what differs.

    Without this, PyTorch would stop with a size-mismatch traceback per tensor. An argument
    the model leaves unset (``embedding_dim=None``: "the data's width") takes the stored one.
    """
    different = [
        name
        for name in ARCHITECTURE
        if name in stored and current.get(name) is not None and stored[name] != current[name]
    ]
    if different:
        given = ", ".join(f"{name}={current[name]!r}" for name in different)
        trained = ", ".join(f"{name}={stored[name]!r}" for name in different)
        raise CheckpointError(
            f"{given} contradicts {source}, whose network was trained with {trained}: its "
            f"weights fit only that shape; {remedy}"
        )


def validate_checkpoint(checkpoint: Any, model_class: type | None = None) -> Vocabularies:
    """Check a loaded checkpoint against :mod:`seqtag.checkpoint.schema`; its vocabularies.

    Reduces ``checkpoint`` in place to what may be restored from it: its hyper-parameters to
    plain data (with ``model_class``, the class that will be built from it, exactly that
    class's arguments, checked), its DataModule hyper-parameters to plain values. So whatever
    reads the dictionary next (Lightning, jsonargparse, seqtag) finds no class path or import
    name in it.
    """
    check_is_dictionary(checkpoint)
    vocabularies = read_checkpoint_section(checkpoint)
    check_layout(checkpoint)
    writer = stored_model_class(checkpoint)  # a name, kept where the stripping leaves it
    if writer is not None:
        checkpoint[CHECKPOINT_KEY]["model_class"] = writer
    if model_class is not None:
        checkpoint["hyper_parameters"] = restorable_hyperparameters(checkpoint, model_class)
    elif isinstance(checkpoint.get("hyper_parameters"), dict):
        checkpoint["hyper_parameters"] = _without_code(checkpoint["hyper_parameters"])
    data_hparams = checkpoint.get("datamodule_hyper_parameters")
    if isinstance(data_hparams, dict):
        checkpoint["datamodule_hyper_parameters"] = {
            key: value
            for key, value in _without_code(data_hparams).items()
            if isinstance(key, str) and is_plain_data(value)
        }
    check_finite(checkpoint)
    check_scalars(checkpoint)
    return vocabularies


def read_checkpoint_file(
    ckpt_path: str | os.PathLike[str], model_class: type | None = None
) -> dict[str, Any]:
    """Open a checkpoint file given on a command line; validated (:func:`validate_checkpoint`).

    Lightning's special values (``best``, ``last``, ``hpc``, ``registry...``) and URLs are left
    to Lightning (an empty dict is returned for them, whatever file of that name exists):
    :class:`SeqtagCheckpointIO` checks the file they resolve to when the trainer opens it.
    """
    name = os.fspath(ckpt_path)
    if name in ("best", "last", "hpc") or name.startswith("registry") or "://" in name:
        return {}
    return load_checkpoint(name, model_class)


def load_checkpoint(
    source: str | os.PathLike[str] | IO[bytes],
    model_class: type | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """The one way seqtag opens a checkpoint: ``torch.load(weights_only=True)``, then validation.

    ``source`` is a local file, an fsspec URL (``s3://...``) or an open binary file. Failures of
    the zip reader or the unpickler (a truncated file, a foreign object) become a
    :class:`~seqtag.errors.CheckpointError` naming the file, and what comes back holds only
    what may be restored (see :func:`validate_checkpoint`).
    """
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else "the checkpoint"
    if isinstance(source, str | os.PathLike) and "://" not in name:
        path = Path(name)
        if not path.exists():
            raise CheckpointError(
                f"{name}: no such file (expected a checkpoint written by seqtag fit)"
            )
        if path.is_dir():
            raise CheckpointError(f"{name}: is a directory, expected a checkpoint file")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{name}: not a seqtag checkpoint: the file is empty")
    try:
        if isinstance(source, str | os.PathLike) and "://" in name:
            import fsspec

            with fsspec.open(name, "rb") as stream:
                checkpoint = torch.load(stream, weights_only=True, map_location=map_location)
        else:
            checkpoint = torch.load(source, weights_only=True, map_location=map_location)
    except OSError as err:
        if err.errno == errno.EINVAL:  # the zip reader seeking past the end of the data
            raise CheckpointError(
                f"{name}: not a readable checkpoint: the file is truncated or damaged "
                "(an interrupted copy or save?)"
            ) from err
        raise CheckpointError(f"{name}: cannot read the file ({err.strerror or err})") from err
    except (pickle.UnpicklingError, EOFError, RuntimeError, LookupError, ValueError) as err:
        raise CheckpointError(
            f"{name}: not a seqtag checkpoint: torch.load cannot read it ({_load_failure(err)})"
        ) from err
    try:
        vocabularies = validate_checkpoint(checkpoint, model_class)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from None
    _just_validated.set((checkpoint, vocabularies))
    return checkpoint


def take_validated(checkpoint: dict[str, Any]) -> Vocabularies | None:
    """The vocabularies of ``checkpoint`` if :func:`load_checkpoint` has just validated this
    very dictionary (then forgotten, so it is taken once), else ``None``.

    So a file is validated once on its way from the reader to the model's
    ``on_load_checkpoint``, which validates anything that did not come that way (a plain
    ``Trainer``'s own reader, a dictionary made in code).
    """
    held = _just_validated.get()
    if held is None or held[0] is not checkpoint:
        return None
    _just_validated.set(None)
    return held[1]


def build_from_checkpoint(
    cls: type[pl.LightningModule],
    source: str | os.PathLike[str] | IO[bytes] | dict[str, Any],
    *,
    map_location: Any = None,
    hparams_file: Any = None,
    strict: bool | None = None,
    weights_only: bool | None = True,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """``cls.load_from_checkpoint`` without Lightning's loader, from plain data only.

    Lightning's loader hands the checkpoint's class paths (LightningCLI's ``_class_path``, an
    ``optimizer`` entry) to jsonargparse, which imports and calls what they name. Here the
    file is opened once (:func:`load_checkpoint`), and the model is built by calling ``cls``
    with the checked hyper-parameters (``overrides`` win), then given the checkpoint's hook
    and weights, as Lightning does.

    Args:
        cls: the model class to build (never one a checkpoint names).
        source: a local file, an fsspec URL, an open binary file, or a checkpoint already
            read with :func:`load_checkpoint`.
        map_location: where the weights go (as for ``torch.load``); unset, where they were
            saved when that device exists here, the CPU otherwise.
        hparams_file: not supported: the checkpoint carries its hyper-parameters.
        strict: as for ``load_state_dict`` (default: the model's ``strict_loading``).
        weights_only: must stay ``True``: a checkpoint holds nothing that needs unpickling.
        overrides: hyper-parameters that replace the checkpoint's (those that fix the
            network's shapes must agree with its weights).
    """
    if hparams_file is not None:
        raise ConfigError(
            "load_from_checkpoint(hparams_file=...): a seqtag checkpoint carries its "
            "hyper-parameters; pass changes as keyword arguments instead"
        )
    if weights_only is False:
        raise ConfigError(
            "load_from_checkpoint(weights_only=False): a seqtag checkpoint holds only "
            "tensors and plain data, so it is always opened with weights_only=True"
        )
    if isinstance(source, dict):  # already read with load_checkpoint (without a class)
        checkpoint = source
        checkpoint["hyper_parameters"] = restorable_hyperparameters(checkpoint, cls)
    else:
        location = map_location if map_location is not None else _saved_device
        checkpoint = load_checkpoint(source, cls, location)
    model = cls(**{**checkpoint["hyper_parameters"], **(overrides or {})})
    try:
        model.on_load_checkpoint(checkpoint)
    except CheckpointError as err:  # found once the network is built: name the file
        name = os.fspath(source) if isinstance(source, str | os.PathLike) else ""
        if name and name not in str(err):
            raise CheckpointError(f"{name}: {err}") from None
        raise
    model.load_state_dict(
        checkpoint["state_dict"], strict=model.strict_loading if strict is None else strict
    )
    first = next(iter(checkpoint["state_dict"].values()), None)
    return model.to(first.device) if first is not None else model


def _saved_device(storage: torch.UntypedStorage, location: str) -> torch.UntypedStorage | None:
    """``map_location`` keeping tensors where they were saved, or on the CPU if that is gone."""
    if location.startswith("cuda") and not torch.cuda.is_available():
        return storage.cpu()
    if location.startswith("mps") and not torch.backends.mps.is_available():
        return storage.cpu()
    return None


def warn_other_class(checkpoint: dict[str, Any], cls: type) -> None:
    """Say so when a checkpoint written by one class is loaded into another.

    The class a checkpoint names is never imported; building another one silently could
    change results if the two differ in more than their weights.
    """
    stored = stored_model_class(checkpoint)
    if stored is None:
        return
    own = f"{cls.__module__}.{cls.__qualname__}"
    same_seqtag_class = (
        stored.startswith("seqtag.")
        and own.startswith("seqtag.")
        and stored.rsplit(".", 1)[-1] == cls.__qualname__
    )
    if stored != own and not same_seqtag_class:
        warnings.warn(
            f"the checkpoint was written by {stored}, and is loaded into {own}: seqtag never "
            f"imports a class named in a checkpoint; to use {stored}, name it yourself "
            "(--model on the command line, or its own load_from_checkpoint)",
            stacklevel=3,
        )


def _load_failure(err: BaseException) -> str:
    """The gist of a ``torch.load`` failure: its type and the first specific line, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        # torch's generic advice about weights_only first, then the actual reason
        generic = ("Please file an issue", "Check the documentation")
        lines = [line for line in lines[1:] if not line.startswith(generic)]
    text = lines[0] if lines else ""
    if len(text) > 100:
        text = text[:97] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
