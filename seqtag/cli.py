"""The ``seqtag`` command: Lightning's CLI with seqtag's defaults and one-line errors."""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from argparse import ArgumentError
from pathlib import Path
from types import MethodType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    LRSchedulerTypeTuple,
    instantiate_class,
)
from torch.optim import Optimizer

from seqtag.callbacks import PredictionProgressBar, PredictionWriter
from seqtag.data.datamodule import TaggingDataModule
from seqtag.errors import CheckpointError, SeqtagError
from seqtag.module import CHECKPOINT_KEY, SequenceTagger
from seqtag.resume import install_resume_support


class CommandLineError(SeqtagError):
    """The command line or a config file does not parse (exit status 2, as argparse uses)."""


class SeqtagCLI(LightningCLI):
    """Adds a checkpoint callback (``checkpoint.*``) and the prediction writer (``prediction.*``).

    Vocabulary sizes, the tag set and the embedding width are not arguments: the model takes
    them from the DataModule when training starts, or from the checkpoint given with
    ``--ckpt_path``. Because the network only exists from then on, the ``optimizer`` and
    ``lr_scheduler`` sections are instantiated when training starts, not when the CLI parses
    them (Lightning's automatic version would see a model without parameters).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["auto_configure_optimizers"] = False
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_optimizer_args((Optimizer,), nested_key="optimizer")
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple, nested_key="lr_scheduler")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check ``--ckpt_path`` before Lightning itself opens the checkpoint.

        With ``parser_kwargs={"exit_on_error": False}`` (as :func:`main` passes), a command line
        or config that does not parse raises :class:`CommandLineError` with a one-line summary
        instead of printing the usage and exiting.
        """
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            argv = sys.argv[1:] if args is None else args
            raise CommandLineError(_parser_error_line(str(err), argv)) from err
        subcommand = self.config.get("subcommand")
        if subcommand:
            ckpt_path = self.config[subcommand].get("ckpt_path")
            if ckpt_path:
                _check_checkpoint(ckpt_path)
            elif subcommand != "fit":
                raise CommandLineError(
                    f"seqtag {subcommand} needs a trained model: pass --ckpt_path "
                    "(for example runs/NAME/checkpoints/best.ckpt, written by seqtag fit)"
                )

    def _parse_ckpt_path(self) -> None:
        # Lightning merges the checkpoint's hyper-parameters into the config here; a checkpoint
        # whose hyper-parameters this version's SequenceTagger does not accept fails to parse.
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            raise CheckpointError(
                f"{ckpt_path}: its hyper-parameters do not fit this version of seqtag: "
                f"{_summarize_parser_error(str(err))}"
            ) from err

    def before_instantiate_classes(self) -> None:
        # Checkpoints are opened with weights_only=True unless the user asks otherwise, also on
        # torch versions whose torch.load default still unpickles arbitrary objects.
        if self.subcommand and self.config[self.subcommand].get("weights_only") is None:
            self.config[self.subcommand]["weights_only"] = True

    def after_instantiate_classes(self) -> None:
        install_resume_support(self.trainer)
        _progress_bar_on_stderr(self.trainer)
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        optimizer_init = config.get("optimizer")
        if not optimizer_init:
            return  # the model's own configure_optimizers (Adam) applies
        scheduler_init = config.get("lr_scheduler")

        def configure_optimizers(module: pl.LightningModule) -> Any:
            optimizer = instantiate_class(module.parameters(), optimizer_init)
            scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
            return LightningCLI.configure_optimizers(module, optimizer, scheduler)

        self.model.configure_optimizers = MethodType(configure_optimizers, self.model)


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


def _check_checkpoint(ckpt_path: str | os.PathLike[str]) -> None:
    """Refuse a ``--ckpt_path`` that is missing or not a seqtag checkpoint, with one line.

    Lightning opens the checkpoint itself right after parsing, and would fail with an
    ``UnpicklingError``, a ``RuntimeError`` of the zip reader or a ``KeyError``; this reads it
    first (``weights_only=True``, as Lightning does) so those become a
    :class:`~seqtag.errors.CheckpointError` naming the file. Lightning's special values
    (``best``, ``last``, ``hpc``, ``registry...``) and URLs are left to Lightning.
    """
    name = os.fspath(ckpt_path)
    if name in ("best", "last", "hpc") or name.startswith("registry") or "://" in name:
        return
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
        raise CheckpointError(f"{name}: cannot read the file ({err.strerror or err})") from err
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"{name}: not a seqtag checkpoint: torch.load cannot read it ({_load_failure(err)})"
        ) from err
    section = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(section, dict) or "vocabularies" not in section:
        raise CheckpointError(
            f"{name}: not a seqtag checkpoint: it has no '{CHECKPOINT_KEY}' section with the "
            "vocabularies (use a checkpoint written by seqtag fit)"
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
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            args=None if args is None else argv,
        )
    except SeqtagError as err:
        if debug:
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"seqtag: error: {message}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, CommandLineError) else 1) from None


if __name__ == "__main__":
    main()
