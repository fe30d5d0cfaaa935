"""``seqtag calibrate``: fit the temperature of an existing checkpoint on a dev set.

``seqtag calibrate --ckpt_path P --data.val_path D [--output Q]`` loads the model of ``P``,
reads ``D`` with the data options stored in ``P`` (file format, columns, tag field, missing-tag
marker; any ``--data.*`` given here wins), fits the temperature (see
:mod:`seqtag.calibration.temperature`)
and writes ``P``'s checkpoint with the new temperature to a new file ``Q`` (default: next to
``P``, named ``P.stem + ".calibrated.ckpt"``). ``P`` is only read; an existing ``Q`` is refused.
It prints the temperature and the dev NLL and token ECE before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from seqtag.cli.messages import one_line_errors
from seqtag.errors import ConfigError, OutputError

__all__ = ["main"]

#: Data options read from the checkpoint unless given on the command line.
STORED_OPTIONS = (
    "format",
    "tag_field",
    "token_column",
    "tag_column",
    "missing_tag",
    "eval_batch_size",
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line ``seqtag: error: ...`` (status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"seqtag: error: seqtag calibrate: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="seqtag calibrate",
        description="Fit the temperature of a trained tagger on a dev set, so that its "
        "confidences match its accuracy, and write a new checkpoint with it.",
    )
    parser.add_argument("--ckpt_path", required=True, help="seqtag checkpoint to calibrate")
    parser.add_argument("--data.val_path", dest="val_path", required=True, help="dev corpus")
    parser.add_argument(
        "--output", help="checkpoint to write (default: CKPT.calibrated.ckpt next to it)"
    )
    data = parser.add_argument_group("data options (default: the checkpoint's)")
    data.add_argument("--data.format", dest="format", choices=("conllu", "columns"))
    data.add_argument("--data.tag_field", dest="tag_field", choices=("upos", "xpos"))
    data.add_argument("--data.token_column", dest="token_column", type=int)
    data.add_argument("--data.tag_column", dest="tag_column", type=int)
    data.add_argument(
        "--data.missing_tag", dest="missing_tag", help="marker of unknown tags; null for none"
    )
    data.add_argument("--data.eval_batch_size", dest="eval_batch_size", type=int)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def main(args: list[str] | None = None) -> None:
    """Run ``seqtag calibrate``; user errors end as one line ``seqtag: error: ...``, status 1."""
    options = _parser().parse_args(args)
    debug = options.debug or os.environ.get("SEQTAG_DEBUG") == "1"
    with one_line_errors(debug):
        run(options)


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


def run(options: argparse.Namespace) -> None:
    """Calibrate ``options.ckpt_path`` on ``options.val_path``; see the module docstring."""
    from seqtag.calibration.temperature import (
        collect_dev_set,
        fit_dev_temperature,
        full_dev_batches,
        token_ece,
        write_temperature,
    )
    from seqtag.calibration.test_time import ECE_BINS
    from seqtag.checkpoint.io import build_from_checkpoint, read_checkpoint_file
    from seqtag.data.datamodule import TaggingDataModule
    from seqtag.training.module import SequenceTagger

    if options.eval_batch_size is not None and options.eval_batch_size < 1:
        raise ConfigError(f"data.eval_batch_size must be at least 1, got {options.eval_batch_size}")
    target = output_path(options.ckpt_path, options.output)
    if not Path(options.val_path).is_file():
        raise ConfigError(f"{options.val_path}: no such file (data.val_path)")
    checkpoint = read_checkpoint_file(options.ckpt_path)
    model = build_from_checkpoint(SequenceTagger, checkpoint)
    datamodule = TaggingDataModule(val_path=options.val_path, **_data_options(options, checkpoint))
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


def _data_options(options: argparse.Namespace, checkpoint: dict[str, Any]) -> dict[str, Any]:
    stored = checkpoint.get("datamodule_hyper_parameters") or {}
    data: dict[str, Any] = {key: stored[key] for key in STORED_OPTIONS if key in stored}
    for key in STORED_OPTIONS:
        value = getattr(options, key)
        if value is not None:
            data[key] = value
    if isinstance(data.get("missing_tag"), str) and data["missing_tag"].lower() in ("null", "none"):
        data["missing_tag"] = None
    if data.get("format") not in (None, "conllu", "columns"):
        data.pop("format")  # a prediction-only format: the dev file gives it on the command line
    return data
