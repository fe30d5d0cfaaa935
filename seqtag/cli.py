"""The ``seqtag`` command: Lightning's CLI with seqtag's defaults and one-line errors."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    SaveConfigCallback,
)
from torch.optim import Optimizer

from seqtag.callbacks import PredictionProgressBar, PredictionWriter
from seqtag.checkpoint import read_checkpoint_file
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import CheckpointError, CommandLineError, ConfigError, SeqtagError
from seqtag.module import SequenceTagger
from seqtag.resume import install_resume_support


class TrainingConfigSaver(SaveConfigCallback):
    """Lightning's config saver, for ``fit`` only.

    Evaluation and prediction runs write no config: without a logger their log folder is the
    working directory, where Lightning's saver would overwrite any ``config.yaml``.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


class SeqtagCLI(LightningCLI):
    """The ``seqtag`` command: Lightning's CLI with seqtag's sections and defaults.

    - ``optimizer:`` and ``lr_scheduler:`` are Lightning's usual sections, linked to the
      model's ``optimizer``/``lr_scheduler`` arguments (``link_to``), so the model makes them
      in ``configure_optimizers``, after its network exists.
    - ``checkpoint:`` configures a ``ModelCheckpoint`` (``best.ckpt``/``last.ckpt`` in a fixed
      folder); ``seqtag fit`` refuses to start in a folder that already holds an earlier run's
      checkpoints, unless it resumes that run with ``--ckpt_path``.
    - ``prediction:`` configures the :class:`~seqtag.callbacks.PredictionWriter`.
    - ``model:`` defaults to :class:`~seqtag.SequenceTagger`, and with ``--ckpt_path`` the
      model's hyper-parameters and the data's file-format options come from the checkpoint, so
      ``seqtag predict --ckpt_path M --data.predict_path F`` needs no config.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args(
            (Optimizer,), nested_key="optimizer", link_to="model.init_args.optimizer"
        )
        parser.add_lr_scheduler_args(
            LRSchedulerTypeTuple, nested_key="lr_scheduler", link_to="model.init_args.lr_scheduler"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "model": {"class_path": "seqtag.SequenceTagger"},
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, with the checkpoint's data options as defaults; check ``--ckpt_path`` first.

        With ``parser_kwargs={"exit_on_error": False}`` (as :func:`main` passes), a command line
        or config that does not parse raises :class:`CommandLineError` with a one-line summary
        instead of printing the usage and exiting.
        """
        argv = with_checkpoint_data_options(list(sys.argv[1:] if args is None else args))
        if args is None:
            sys.argv[1:] = argv  # Lightning warns when given both sys.argv and args
        try:
            super().parse_arguments(parser, None if args is None else argv)
        except ArgumentError as err:
            raise CommandLineError(_parser_error_line(str(err), argv)) from err
        subcommand = self.config.get("subcommand")
        if subcommand and not self.config[subcommand].get("ckpt_path") and subcommand != "fit":
            raise CommandLineError(
                f"seqtag {subcommand} needs a trained model: pass --ckpt_path "
                "(for example runs/NAME/checkpoints/best.ckpt, written by seqtag fit)"
            )

    def before_instantiate_classes(self) -> None:
        # Checkpoints are opened with weights_only=True unless the user asks otherwise, also on
        # torch versions whose torch.load default still unpickles arbitrary objects.
        if self.subcommand and self.config[self.subcommand].get("weights_only") is None:
            self.config[self.subcommand]["weights_only"] = True
        if self.subcommand == "predict":
            # The writer streams predictions to the output; Lightning keeping them all as well
            # would make memory grow with the input.
            self.config["predict"]["return_predictions"] = False

    def after_instantiate_classes(self) -> None:
        install_resume_support(self.trainer)
        _progress_bar_on_stderr(self.trainer)

    def before_fit(self) -> None:
        """Refuse to overwrite the checkpoints of an earlier run (resuming it is fine)."""
        if self.config_init["fit"].get("ckpt_path"):
            return
        for callback in self.trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if not folder or "://" in str(folder):
                continue
            earlier = sorted(p.name for p in Path(folder).glob("*.ckpt"))
            if earlier:
                raise ConfigError(
                    f"{folder} already holds {', '.join(earlier)} from an earlier run: resume "
                    f"it with --ckpt_path {Path(folder) / 'last.ckpt'}, write this run "
                    "elsewhere with --checkpoint.dirpath DIR, or delete the old files first"
                )


def with_checkpoint_data_options(argv: list[str]) -> list[str]:
    """``argv`` with the data options of ``--ckpt_path``'s checkpoint inserted as defaults.

    The checkpoint is read and checked first (a seqtag checkpoint, a known layout, a model
    class from seqtag or named by the user), before Lightning reads it to parse its
    hyper-parameters.

    The checkpoint's file-format options (format, columns, tag field) and its dev and test
    files go right after the subcommand, so that anything the user gives, on the command line
    or in a config, comes later and wins. Training files and ``predict_path`` are never taken.
    """
    subcommand = next((a for a in argv if a in LightningCLI.subcommands()), None)
    ckpt_path = _checkpoint_argument(argv)
    if subcommand is None or not ckpt_path:
        return argv
    checkpoint = read_checkpoint_file(ckpt_path)
    _check_model_class(ckpt_path, checkpoint, argv)
    if subcommand == "fit":
        return argv
    stored = checkpoint.get("datamodule_hyper_parameters") or {}
    options = {key: stored[key] for key in CHECKPOINT_DATA_OPTIONS if key in stored}
    if not options:
        return argv
    at = argv.index(subcommand) + 1
    return [*argv[:at], "--data", json.dumps(options), *argv[at:]]


def _check_model_class(ckpt_path: str, checkpoint: dict[str, Any], argv: list[str]) -> None:
    """Refuse a checkpoint naming a model class that is neither seqtag's nor the user's.

    Lightning merges the checkpoint's hyper-parameters into the command line, and the class
    path they name (``_class_path``) would be imported to build the model: a crafted checkpoint
    could make ``seqtag predict`` import any module. Only classes from the ``seqtag`` package,
    or the one named with ``--model`` on this command line, are accepted; nothing is imported
    here.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if class_path is None:
        return
    named = {
        arg.split("=", 1)[1] if "=" in arg else argv[position + 1]
        for position, arg in enumerate(argv)
        if arg.split("=", 1)[0] in ("--model", "--model.class_path") and position + 1 < len(argv)
    }
    if not isinstance(class_path, str) or not (
        class_path.startswith("seqtag.") or class_path in named
    ):
        raise CheckpointError(
            f"{ckpt_path}: names the model class {class_path!r}, which is not seqtag's; if it is "
            "yours, name it on the command line with --model (nothing was imported)"
        )


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
)


# Lines of jsonargparse's nested reports that say nothing about what to fix.
_NOISE = re.compile(
    r"Does not validate against any of the Union subtypes|Subtypes: |Errors:$|Given value( type)?: "
    r"|Expected a <class 'NoneType'>$|Expected a path but .* either not accessible or invalid$"
)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)":\s*(.*)')
_CLASS_PATH = re.compile(r"Problem with given class_path '[^']*':\s*(.*)")
_NOT_ACCEPTED = re.compile(
    r"(?:Option '(?P<option>[^']+)' is not accepted"
    r"|(?:Group '(?P<group>[^']+)'|Subcommand '[^']+') does not accept option '(?P<key>[^']+)')$"
)


def _summarize_parser_error(message: str) -> str:
    """jsonargparse's indented, multi-line report as one line ``full.key: what is wrong``.

    A nested report such as ``Parser key "model": ... Problem with given class_path ...:
    Option 'hidden_sise' is not accepted`` becomes ``model.init_args.hidden_sise: no such
    option``, and so does an unknown key in a config file (``Subcommand 'fit' does not accept
    option 'data.no_such_key'``); lines that only list the union's alternatives or echo the
    value are dropped.
    """
    stack: list[tuple[int, str]] = []  # (indentation, key component) of the enclosing lines
    problems: dict[str, list[str]] = {}
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):
            text, indent = text[2:].lstrip(), indent + 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if _NOISE.match(text):
            continue
        if match := _PARSER_KEY.match(text):
            stack.append((indent, match.group(1)))
            text = match.group(2)
        elif match := _CLASS_PATH.match(text):
            stack.append((indent, "init_args"))
            text = match.group(1)
        parts = [part for _, part in stack]
        if match := _NOT_ACCEPTED.match(text):
            parts += [name for name in match.group("option", "group", "key") if name]
            text = "no such option"
        key = ".".join(parts)
        if text:
            problems.setdefault(key, []).append(text)
    parts = [(f"{key}: " if key else "") + "; ".join(texts) for key, texts in problems.items()]
    return "; ".join(parts) or " ".join(message.split())


def _parser_error_line(message: str, argv: Any) -> str:
    """The one-line form of a parser error, with where to find the valid options."""
    subcommand = next((a for a in argv if a in LightningCLI.subcommands()), None)
    command = f"seqtag {subcommand}" if subcommand else "seqtag"
    return f"{_summarize_parser_error(message)} (see {command} --help)"


def _progress_bar_on_stderr(trainer: pl.Trainer) -> None:
    """Swap Lightning's default bar for one that draws the prediction bar on stderr."""
    for position, callback in enumerate(trainer.callbacks):
        if type(callback) is TQDMProgressBar:
            replacement = PredictionProgressBar(
                refresh_rate=callback.refresh_rate, process_position=callback.process_position
            )
            trainer.callbacks[position] = replacement


def _configure_logging() -> None:
    logger = logging.getLogger("seqtag")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("seqtag: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


DESCRIPTION = (
    "seqtag: BiRNN sequence taggers (POS tagging, chunking, NER) on PyTorch Lightning. "
    "Subcommands: fit (train), validate, test, predict (tag text), and export "
    "(ONNX/TorchScript; see seqtag export --help). seqtag --version prints the versions."
)


def _version_line() -> str:
    import lightning

    from seqtag import __version__

    return f"seqtag {__version__} (torch {torch.__version__}, lightning {lightning.__version__})"


def main(args: list[str] | None = None) -> None:
    """Run ``seqtag fit|validate|test|predict|export``; user errors end as one line on stderr.

    An error caused by the input (a :class:`~seqtag.errors.SeqtagError`: a malformed corpus or
    vector file, a file that is not a seqtag checkpoint, a command line or config that does not
    parse) is printed as the single line ``seqtag: error: WHAT`` on stderr, without a
    traceback, and the process exits with status 2 for command-line and config errors (as
    argparse does) and 1 for everything else. Any other exception is a bug and keeps its
    traceback. ``--debug`` (anywhere on the command line) or ``SEQTAG_DEBUG=1`` re-raises user
    errors too, to show where they came from. ``--help`` and ``--print_config`` print to
    stdout and exit 0 as usual.

    Args:
        args: the arguments after ``seqtag``; ``None`` reads ``sys.argv``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["--version"], ["-V"]):
        print(_version_line())
        return
    if argv[:1] == ["export"]:
        from seqtag.export import main as export_main

        export_main(argv[1:])
        return
    debug = "--debug" in argv or os.environ.get("SEQTAG_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        # Let Lightning read sys.argv itself: passing args= as well makes it warn.
        sys.argv[1:] = argv
    _configure_logging()
    try:
        SeqtagCLI(
            SequenceTagger,
            TaggingDataModule,
            subclass_mode_model=True,
            save_config_callback=TrainingConfigSaver,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False, "description": DESCRIPTION},
            args=None if args is None else argv,
        )
    except ArgumentError as err:
        # Parse errors of the command line became CommandLineErrors in parse_arguments; what
        # reaches here is Lightning merging --ckpt_path's hyper-parameters into the config.
        if debug:
            raise
        checkpoint = _checkpoint_argument(argv) or "the checkpoint"
        _print_error(
            CheckpointError(
                f"{checkpoint}: its hyper-parameters do not fit this version of seqtag: "
                f"{_summarize_parser_error(str(err))}"
            )
        )
    except SeqtagError as err:
        if debug:
            raise
        _print_error(err)


def _checkpoint_argument(argv: list[str]) -> str | None:
    """The value of ``--ckpt_path`` on a command line, if given there."""
    for position, arg in enumerate(argv):
        if arg == "--ckpt_path" and position + 1 < len(argv):
            return argv[position + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return None


def _print_error(err: SeqtagError) -> None:
    """``seqtag: error: WHAT`` on one line; exit status 2 for command lines, else 1."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"seqtag: error: {message}", file=sys.stderr)
    raise SystemExit(2 if isinstance(err, CommandLineError) else 1) from None


if __name__ == "__main__":
    main()
