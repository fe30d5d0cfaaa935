"""What a ``seqtag`` command may write: never one of its inputs, never into the working folder
unasked.

Checked on the parsed config, before anything is built, so the check sees every way a path can
be given (options, config files, a subcommand's section) and refuses before any work is done.
"""

from __future__ import annotations

import os
from typing import Any

from seqtag.files.outputs import refuse_same_file
from seqtag.prediction.uncertain import uncertain_sidecar_path


def config_files(config: Any, section: Any) -> list[str]:
    """The config files given on this command line (top level and the subcommand's)."""
    files = [*(config.get("config") or []), *(section.get("config") or [])]
    return [str(getattr(item, "absolute", item)) for item in files if item]


#: Data options that name files a command reads.
_DATA_INPUTS = ("train_path", "val_path", "test_path", "predict_path", "vectors")


def refuse_outputs_over_inputs(section: Any, config_files: list[str]) -> None:
    """No output of a command is one of its inputs (checkpoint, config, data, vectors), or
    another of its outputs, however spelled (links count): writing it would destroy it."""
    inputs: dict[str, str | None] = {f"the config file {name}": name for name in config_files}
    ckpt_path = section.get("ckpt_path")
    if ckpt_path and os.path.isfile(str(ckpt_path)):
        inputs["the checkpoint (--ckpt_path)"] = str(ckpt_path)
    data = section.get("data")  # its options, or class_path and init_args for a subclass
    data_args = (data.get("init_args") or data) if data is not None else {}
    for key in _DATA_INPUTS:
        value = data_args.get(key)
        if isinstance(value, str) and value not in ("", "-"):
            inputs[f"the input --data.{key}"] = value
    prediction = section.get("prediction") or {}
    outputs = []
    if prediction.get("output") not in (None, "-"):
        outputs.append(("--prediction.output", str(prediction["output"])))
    if prediction.get("uncertain_output"):
        uncertain = str(prediction["uncertain_output"])
        outputs.append(("--prediction.uncertain_output", uncertain))
        sidecar = str(uncertain_sidecar_path(uncertain))
        outputs.append((f"--prediction.uncertain_output (its sidecar {sidecar})", sidecar))
    for position, (option, output) in enumerate(outputs):
        earlier = {f"the output of {other}": path for other, path in outputs[:position]}
        refuse_same_file(output, {**inputs, **earlier}, option)


def no_logs_in_the_working_folder(subcommand: str, section: Any) -> None:
    """``test``, ``validate`` and ``predict`` log nowhere unless told where.

    Lightning's default logger would leave ``lightning_logs/version_N/`` in the working
    folder at every evaluation; with ``--trainer.default_root_dir`` or a logger configured,
    logs (and the reliability diagrams) go there as usual.
    """
    trainer = section.get("trainer")
    if subcommand == "fit" or trainer is None:
        return
    if trainer.get("logger") is None and trainer.get("default_root_dir") is None:
        trainer["logger"] = False


def refuse_before_reading(subcommand: str, section: Any) -> None:
    """What ``export`` and ``calibrate`` refuse before their checkpoint is read: an output
    that would replace the checkpoint (even one that is not a checkpoint) or cannot be
    written, and for ``calibrate`` a missing dev file."""
    ckpt_path = str(section.get("ckpt_path"))
    if subcommand == "export":
        from seqtag.integrations.export import check_outputs

        check_outputs(ckpt_path, str(section.get("output")))
    elif subcommand == "calibrate":
        from seqtag.cli.calibrate import check_calibrate_options

        data = section.get("data") or {}
        check_calibrate_options(ckpt_path, section.get("output"), data.get("val_path"))
