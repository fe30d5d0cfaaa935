"""``seqtag calibrate``: fit the temperature of an existing checkpoint on a dev set.

``seqtag calibrate --ckpt_path P --data.val_path D [--output Q]`` (a subcommand of the
``seqtag`` command, :meth:`seqtag.cli.trainer.SeqtagTrainer.calibrate`) rebuilds the model of
``P``, reads ``D`` with the data options stored in ``P`` (file format, columns, tag field,
missing-tag marker; any ``--data.*`` given wins; see :mod:`seqtag.cli.checkpoint_options`),
fits the temperature (see :mod:`seqtag.calibration.temperature`) and writes ``P``'s checkpoint
with the new temperature to a new file ``Q`` (default: next to ``P``, named
``P.stem + ".calibrated.ckpt"``). ``P`` is only read; an existing ``Q`` is refused. It prints
the temperature and the dev NLL and token ECE before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqtag.errors import CommandLineError, ConfigError, OutputError

__all__ = ["calibrate_checkpoint", "check_calibrate_options", "output_path"]


def check_calibrate_options(ckpt_path: str, output: str | None, val_path: Any) -> None:
    """What can be refused before the checkpoint is read: no dev file, a dev file that is
    missing, an output that would replace the checkpoint or any existing file."""
    if not val_path:
        raise CommandLineError(
            "seqtag calibrate needs a dev file: pass --data.val_path (a tagged corpus, read "
            "with the checkpoint's data options) (see seqtag calibrate --help)"
        )
    output_path(ckpt_path, output)
    if not Path(str(val_path)).is_file():
        raise ConfigError(f"{val_path}: no such file (data.val_path)")


def output_path(ckpt_path: str, output: str | None) -> Path:
    """The file to write: never the input, never an existing file."""
    from seqtag.files.outputs import check_output_file, refuse_same_file

    source = Path(ckpt_path)
    target = Path(output) if output else source.with_name(source.stem + ".calibrated.ckpt")
    refuse_same_file(target, {"the checkpoint being calibrated (--ckpt_path)": source})
    if target.exists() or target.is_symlink():
        raise OutputError(
            f"{target}: already exists; give another --output or delete it (it is never "
            "overwritten)"
        )
    check_output_file(target)
    return target


def calibrate_checkpoint(
    checkpoint: dict[str, Any], model_class: type, datamodule: Any, target: Path
) -> None:
    """Rebuild ``model_class`` from ``checkpoint``, fit its temperature on ``datamodule``'s
    dev set, write the checkpoint with it to ``target`` and print what changed."""
    from seqtag.calibration.temperature import (
        collect_dev_set,
        fit_dev_temperature,
        full_dev_batches,
        token_ece,
        write_temperature,
    )
    from seqtag.calibration.test_time import ECE_BINS
    from seqtag.checkpoint.io import build_from_checkpoint

    if datamodule is None or not hasattr(datamodule, "encode_with"):
        raise ConfigError("seqtag calibrate reads its dev file with seqtag's TaggingDataModule")
    model = build_from_checkpoint(model_class, checkpoint)
    datamodule.encode_with(model.vocabularies)
    dev = collect_dev_set(model, full_dev_batches(datamodule))
    temperature, before, after = fit_dev_temperature(model.tagger, dev)
    ece_before = token_ece(model.tagger, dev, None)
    ece_after = token_ece(model.tagger, dev, temperature)
    write_temperature(checkpoint, temperature, target)
    print(f"temperature: {temperature:.4f} (fitted on {dev.tokens} dev tokens)")
    print(f"dev NLL per token: {before:.4f} before, {after:.4f} after")
    print(
        f"dev token ECE ({ECE_BINS} equal-width bins): {ece_before:.4f} before, "
        f"{ece_after:.4f} after"
    )
    print(f"wrote {target}")
