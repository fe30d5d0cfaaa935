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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from seqtag.checkpoint_schema import (
    check_finite,
    check_hyperparameters,
    check_is_dictionary,
    check_layout,
    check_vocabulary_data,
)
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CheckpointError

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


def write_checkpoint_section(checkpoint: dict[str, Any], vocabularies: Vocabularies) -> None:
    """Store the vocabularies (and the layout version) in ``checkpoint``."""
    checkpoint[CHECKPOINT_KEY] = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "vocabularies": vocabularies.to_dict(),
    }


def read_checkpoint_section(checkpoint: Any) -> Vocabularies:
    """The vocabularies stored in ``checkpoint``, after checking the section's version."""
    section = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(section, dict) or "vocabularies" not in section:
        raise CheckpointError(
            f"not a seqtag checkpoint: it has no '{CHECKPOINT_KEY}' section with the "
            "vocabularies (use a checkpoint written by seqtag fit)"
        )
    version = section.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        if isinstance(version, int) and version > CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"the checkpoint was made by a newer seqtag (checkpoint format {version}; this "
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
            f"the checkpoint's vocabularies are damaged ({type(err).__name__}: {err})"
        ) from None
    return vocabularies


def check_architecture(stored: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse to restore weights into a network of other shapes, naming what differs.

    Without this, PyTorch would stop with a size-mismatch traceback per tensor.
    """
    different = [
        f"{name}={stored[name]!r} (this model: {current.get(name)!r})"
        for name in ARCHITECTURE
        if name in stored and stored[name] != current.get(name)
    ]
    if different:
        raise CheckpointError(
            f"the checkpoint was trained with {', '.join(different)}; load it with "
            "SequenceTagger.load_from_checkpoint(path), which takes them from the checkpoint"
        )


def validate_checkpoint(checkpoint: Any, model_class: type | None = None) -> Vocabularies:
    """Check a loaded checkpoint against :mod:`seqtag.checkpoint_schema`; its vocabularies.

    ``model_class`` (the class that will be built from it) checks the hyper-parameters too.
    """
    check_is_dictionary(checkpoint)
    vocabularies = read_checkpoint_section(checkpoint)
    check_layout(checkpoint)
    if model_class is not None:
        check_hyperparameters(checkpoint, model_class)
    check_finite(checkpoint)
    return vocabularies


def read_checkpoint_file(
    ckpt_path: str | os.PathLike[str], model_class: type | None = None
) -> dict[str, Any]:
    """Open a checkpoint file (``weights_only=True``) and validate it (:func:`validate_checkpoint`).

    Lightning opens ``--ckpt_path`` itself and would fail with an ``UnpicklingError``, a
    ``RuntimeError`` of the zip reader or a ``KeyError``; reading it here first turns those into
    a :class:`~seqtag.errors.CheckpointError` naming the file. Lightning's special values
    (``best``, ``last``, ``hpc``, ``registry...``) and URLs are left to Lightning (an empty
    dict is returned for them); :class:`SeqtagCheckpointIO` checks the file they resolve to.
    """
    name = os.fspath(ckpt_path)
    if name in ("best", "last", "hpc") or name.startswith("registry") or "://" in name:
        return {}
    path = Path(name)
    if not path.exists():
        raise CheckpointError(f"{name}: no such file (expected a checkpoint written by seqtag fit)")
    if path.is_dir():
        raise CheckpointError(f"{name}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{name}: not a seqtag checkpoint: the file is empty")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except OSError as err:
        if err.errno == errno.EINVAL:  # the zip reader seeking past the end of the data
            raise CheckpointError(
                f"{name}: not a readable checkpoint: the file is truncated or damaged "
                "(an interrupted copy or save?)"
            ) from err
        raise CheckpointError(f"{name}: cannot read the file ({err.strerror or err})") from err
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{name}: not a seqtag checkpoint: torch.load cannot read it ({_load_failure(err)})"
        ) from err
    try:
        validate_checkpoint(checkpoint, model_class)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from None
    return checkpoint


@contextmanager
def checked_loading(checkpoint_path: Any, model_class: type) -> Iterator[None]:
    """Around Lightning's ``load_from_checkpoint``: validate a local file first, and name the
    file in errors that show only once the model is built from it (weights of other shapes)."""
    name = os.fspath(checkpoint_path) if isinstance(checkpoint_path, str | os.PathLike) else ""
    if name and "://" not in name:
        read_checkpoint_file(name, model_class if os.path.isfile(name) else None)
    try:
        yield
    except CheckpointError as err:
        if name and name not in str(err):
            raise CheckpointError(f"{name}: {err}") from None
        raise


class SeqtagCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader, validating what it reads.

    ``--ckpt_path last`` or ``hpc`` is resolved by Lightning to a file only when it loads it;
    as the trainer's ``CheckpointIO`` plugin this turns a truncated or foreign file found that
    way into the same one-line error as a path given by name.
    """

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint_file(path)


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
