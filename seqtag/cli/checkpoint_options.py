"""What a checkpoint given to ``seqtag`` supplies to the run: the model's arguments, and for
``test``/``validate``/``predict`` the data's file-format options as defaults.

Only the checked plain values of :func:`seqtag.checkpoint.io.read_checkpoint_file` are used.
"""

from __future__ import annotations

from typing import Any

from seqtag.checkpoint.schema import check_arguments
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import CheckpointError


def checkpoint_data_options(ckpt_path: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The file-format options and dev/test files ``checkpoint`` supplies as data defaults.

    Training files and ``predict_path`` are never taken.
    """
    stored = checkpoint.get("datamodule_hyper_parameters") or {}
    options = {key: stored[key] for key in CHECKPOINT_DATA_OPTIONS if key in stored}
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


#: Data options a checkpoint supplies to ``seqtag test|validate|predict`` unless given.
CHECKPOINT_DATA_OPTIONS = (
    "val_path",
    "test_path",
    "format",
    "predict_format",
    "tag_field",
    "token_column",
    "tag_column",
    "eval_batch_size",
    "missing_tag",
)
