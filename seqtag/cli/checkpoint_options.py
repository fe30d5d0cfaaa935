"""What a checkpoint given to ``seqtag SUBCOMMAND --ckpt_path`` supplies to the run, written once.

Every subcommand that takes ``--ckpt_path`` asks :func:`supplied_by_checkpoint`: whether the
command line reads the checkpoint before building the run (then the model's arguments come
from it), and which data options it gives as defaults that anything on the command line or in
a config file overrides. Only the checked plain values of
:func:`seqtag.checkpoint.io.read_checkpoint_file` are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqtag.checkpoint.schema import check_arguments
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import CheckpointError

#: How the checkpoint's corpora were read: a file read with its model is read the same way.
FORMAT_OPTIONS = (
    "format",
    "predict_format",
    "tag_field",
    "token_column",
    "tag_column",
    "eval_batch_size",
    "missing_tag",
)
#: The checkpoint's dev and test files: what ``validate`` and ``test`` score by default.
EVALUATION_FILES = ("val_path", "test_path")
#: Formats that hold gold tags; ``format`` is what training and dev files were read as, so a
#: checkpoint naming another one (no ``seqtag fit`` writes it) supplies no ``format``.
TAGGED_FORMATS = ("conllu", "columns")


@dataclass(frozen=True)
class Supplied:
    """What ``--ckpt_path`` gives one subcommand.

    Attributes:
        read_first: the command line reads the checkpoint (once) before the run is built,
            and the model's arguments come from it.
        data_options: the data options it supplies as defaults.
    """

    read_first: bool
    data_options: tuple[str, ...]


_SUPPLIED = {
    # Resuming: the model's arguments; the data are the training config's.
    "fit": Supplied(True, ()),
    "validate": Supplied(True, EVALUATION_FILES + FORMAT_OPTIONS),
    "test": Supplied(True, EVALUATION_FILES + FORMAT_OPTIONS),
    "predict": Supplied(True, EVALUATION_FILES + FORMAT_OPTIONS),
    # The dev file is named every time (--data.val_path); it is read as the checkpoint's were.
    "calibrate": Supplied(True, FORMAT_OPTIONS),
    # Reads no data; seqtag.integrations.export.export opens the checkpoint itself, once.
    "export": Supplied(False, ()),
    # Reads no data; seqtag.serving.server.serve opens the checkpoint itself, once, and hands
    # its bytes to the workers.
    "serve": Supplied(False, ()),
    # Takes no checkpoint: it encodes a training corpus for models not yet trained.
    "prepare": Supplied(False, ()),
}


def supplied_by_checkpoint(subcommand: str) -> Supplied:
    """What ``--ckpt_path`` supplies to ``subcommand`` (one of ``SeqtagCLI.subcommands()``)."""
    return _SUPPLIED[subcommand]


def checkpoint_data_options(
    subcommand: str, ckpt_path: str, checkpoint: dict[str, Any]
) -> dict[str, Any]:
    """The data options ``checkpoint`` supplies to ``subcommand`` as defaults, checked.

    Training files and ``predict_path`` are never taken.
    """
    stored = checkpoint.get("datamodule_hyper_parameters") or {}
    wanted = supplied_by_checkpoint(subcommand).data_options
    options = {key: stored[key] for key in wanted if key in stored}
    if options.get("format", TAGGED_FORMATS[0]) not in TAGGED_FORMATS:
        del options["format"]
    try:
        check_arguments(options, TaggingDataModule, "datamodule_hyper_parameters")
    except CheckpointError as err:
        raise CheckpointError(f"{ckpt_path}: {err}") from None
    return options


def restore_model_arguments(section: Any, checkpoint: dict[str, Any]) -> None:
    """Set the model's arguments to the checkpoint's, where the model has them.

    The values are the checked plain ones of :func:`~seqtag.checkpoint.io.read_checkpoint_file`,
    set directly: no class path from a checkpoint reaches the parser. An argument the run's
    model class does not have (``--model`` naming a class of the user's) is left as it is.
    """
    model = section.get("model")
    init_args = model.get("init_args") if model is not None else None
    if init_args is None:
        return
    for key, value in checkpoint["hyper_parameters"].items():
        if key in init_args:
            init_args[key] = value
